"""Command: `coachlab serve LIBRARY --upstream URL`: the OpenAI-compatible coaching proxy.

Registered in the main app (`coachlab.cli`) with `app.command("serve")(serve)`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from coachlab.errors import UsageError

__all__ = ["serve"]

err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _request_log(log_file: Path | None) -> None:
    """One JSON line per request, to `log_file` (appended) or stderr, with keys masked."""
    from coachlab.redact import RedactingFilter
    from coachlab.serve.proxy import REQUEST_LOGGER

    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8") if log_file is not None else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter())
    log = logging.getLogger(REQUEST_LOGGER)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    # Library reloads and upstream failures: one line each on stderr (the root handler, redacted).
    logging.getLogger("coachlab.serve").setLevel(logging.INFO)
    logging.getLogger("coachlab.library.coaching").setLevel(logging.INFO)


def serve(
    library: Annotated[Path, typer.Argument(help="A run folder (runs/<name>) or its library/ folder.")],
    upstream: Annotated[
        str, typer.Option(help="The model server's base URL, as an OpenAI client takes it: http://host:8000/v1.")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 exposes it to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    upstream_key_env: Annotated[
        str | None,
        typer.Option(help="Send the key in this environment variable upstream (default: the caller's Authorization)."),
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Serve this library version (default: the latest, reloaded).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Retriever: auto, embedding, lexical or openai (default: the run's).")
    ] = None,
    k: Annotated[int | None, typer.Option(help="Strategies per request, at most (default: the run's).")] = None,
    floor: Annotated[float | None, typer.Option(help="Lowest retrieval score shown (default: the run's).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the upstream's next bytes before a 502.")] = 300.0,
    reload_interval: Annotated[float, typer.Option(help="Seconds between looks for a new library version.")] = 2.0,
    log_file: Annotated[
        Path | None, typer.Option(help="Append the per-request JSON lines here (default: stderr).")
    ] = None,
) -> None:
    """Serve an OpenAI-compatible API that coaches each chat request with the library, then forwards it.

    Point your application's base_url at http://HOST:PORT/v1. Each POST /v1/chat/completions gets
    the approved strategies that fit its messages appended to its system message; the upstream's
    answer comes back unchanged (streaming too). Other /v1/ paths pass through; GET /healthz says
    what is served. Only approved strategies are ever served; a new library version is picked up
    while running.
    """
    # One BLAS thread per embedding: the server embeds requests side by side in worker threads, and
    # OpenBLAS's own threads fighting for the same cores made one query 100+ ms instead of 10-30 ms.
    if "numpy" not in sys.modules:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(name, "1")
    import uvicorn

    from coachlab.library.coaching import LiveLibrary, library_folder, run_retrieval_config
    from coachlab.library.retrieval import RetrievalConfig
    from coachlab.serve.proxy import ProxyConfig, create_app, upstream_key

    try:
        config = ProxyConfig(
            upstream=upstream, upstream_key_env=upstream_key_env, timeout_s=timeout, reload_interval_s=reload_interval
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = {"timeout_s": "--timeout", "reload_interval_s": "--reload-interval"}.get(
            str(first["loc"][0]), f"--{str(first['loc'][0]).replace('_', '-')}"
        )
        raise UsageError(f"{field}: {first['msg']}") from None
    key = upstream_key(config)
    folder = library_folder(library)
    base = run_retrieval_config(folder) or RetrievalConfig()
    overrides = {name: value for name, value in (("kind", kind), ("k", k), ("floor", floor)) if value is not None}
    try:
        retrieval = RetrievalConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"--{first['loc'][0]}: {first['msg']}") from None
    _request_log(log_file)
    live = LiveLibrary(folder, version=version, retrieval=retrieval)
    served = live.current
    err.print(
        f"coachlab serve: library v{served.version} ({len(served.strategies)} approved strategies, retrieval "
        f"{served.kind}, k {served.k}, floor {served.floor:.2f}) at http://{host}:{port}/v1 -> {config.upstream}"
        + ("" if version is not None else "; new versions are picked up as they appear"),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    app = create_app(live, config, key=key)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,  # the upstream's own server and date headers come through instead
        date_header=False,
    )
