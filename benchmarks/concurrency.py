"""Throughput of coachlab's model path under concurrency, against a server with a fixed latency.

The loopback `OpenAIStub` answers every call after exactly `--latency` seconds, so a client that
adds nothing reaches `concurrency / latency` calls per second. Each level runs calls through
`RoleClient` -> `OpenAIChatCompletionClient` (openai SDK, HTTP keep-alive) with the model
entry's `concurrency` set to the level, and prints the share of that ideal it reached. Two more
rows per level post the same request without the SDK, AutoGen or coachlab: with httpx2 (the HTTP
client under the openai SDK), and with a minimal socket client that costs next to nothing, so
that row measures the stub alone: if it is near 100% while the first is not, the client side is
the bottleneck, not the stub.
"CPU/call" is the process's CPU time per call (client and stub share one interpreter), split into
the stub thread's part and the rest (the client side); "1-core cap" is the share of the ideal that
one fully free core could reach at that CPU cost (an asyncio process runs on one core).

Run:
    .venv/bin/python benchmarks/concurrency.py                # about 35 s
    .venv/bin/python benchmarks/concurrency.py --levels 64 --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx2
from autogen_core.models import LLMMessage, SystemMessage, UserMessage

from coachlab.llm import Backend, ModelEntry, RoleClient
from coachlab.testing.openai_stub import OpenAIStub

SYSTEM = " ".join(f"Policy rule {i}: be precise, polite and brief when you answer the customer." for i in range(20))
MESSAGES: list[LLMMessage] = [
    SystemMessage(content=SYSTEM),
    UserMessage(content="My parcel for order A-100 is five days late. Where is it?", source="customer"),
]


@dataclass(frozen=True)
class Figures:
    """One measured run."""

    rate: float
    """Calls per second."""
    cpu_per_call: float
    """Process CPU seconds per call (client and stub)."""
    stub_cpu_per_call: float | None
    """The stub thread's share of it."""


async def drive(stub: OpenAIStub, call: Callable[[], Awaitable[object]], *, calls: int, concurrency: int) -> Figures:
    """Make `calls` calls, `concurrency` at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            await call()

    stub_cpu, cpu, started = stub.server_cpu_s, time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    elapsed = time.perf_counter() - started
    stub_after = stub.server_cpu_s
    return Figures(
        rate=calls / elapsed,
        cpu_per_call=(time.process_time() - cpu) / calls,
        stub_cpu_per_call=(stub_after - stub_cpu) / calls if stub_after is not None and stub_cpu is not None else None,
    )


async def coachlab_level(stub: OpenAIStub, concurrency: int, calls: int) -> Figures:
    """RoleClient over OpenAIChatCompletionClient, the backend's limit set to `concurrency`."""
    entry = ModelEntry(provider="openai", config=stub.model_entry_config(model="bench"), concurrency=concurrency)
    backend = Backend.from_entry("bench", entry, where="benchmarks/concurrency.py")
    role = RoleClient(backend, role="agent", seed=1, trial=0)
    try:
        await drive(stub, lambda: role.create(MESSAGES), calls=concurrency, concurrency=concurrency)  # open connections
        return await drive(stub, lambda: role.create(MESSAGES), calls=calls, concurrency=concurrency)
    finally:
        await backend.client.close()


BODY = {
    "model": "bench",
    "seed": 1,
    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": str(MESSAGES[1].content)}],
}


async def httpx_level(stub: OpenAIStub, concurrency: int, calls: int) -> Figures:
    """The same request posted with httpx2 (the openai SDK's HTTP client), no SDK on top."""
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=stub.url, limits=limits, timeout=30) as http:

        async def call() -> None:
            response = await http.post("/chat/completions", json=BODY)
            response.raise_for_status()
            response.json()

        await drive(stub, call, calls=concurrency, concurrency=concurrency)
        return await drive(stub, call, calls=calls, concurrency=concurrency)


async def socket_level(stub: OpenAIStub, concurrency: int, calls: int) -> Figures:
    """The same request written on `concurrency` kept-alive sockets by a minimal HTTP/1.1 client.

    It costs next to nothing per call, so this row measures the stub alone.
    """
    body = json.dumps(BODY).encode()
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(concurrency):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", stub.port))

    async def call() -> None:
        reader, writer = await free.get()
        writer.write(request)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
        assert lines[0].startswith("http/1.1 200"), lines[0]
        length = next(int(x.split(":")[1]) for x in lines if x.startswith("content-length:"))
        json.loads(await reader.readexactly(length))
        free.put_nowait((reader, writer))

    try:
        await drive(stub, call, calls=concurrency, concurrency=concurrency)
        return await drive(stub, call, calls=calls, concurrency=concurrency)
    finally:
        while not free.empty():
            free.get_nowait()[1].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="The stub's fixed latency in seconds.")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64], help="Concurrency levels.")
    parser.add_argument("--seconds", type=float, default=3.0, help="Ideal duration of each run.")
    parser.add_argument("--no-raw", action="store_true", help="Skip the rows without the openai SDK.")
    args = parser.parse_args()

    print(f"stub latency {args.latency * 1000:.0f} ms; ideal = concurrency / latency; {os.cpu_count()} CPUs")
    print(
        f"{'path':<40}{'conc':>5}{'calls':>7}{'calls/s':>9}{'ideal':>7}{'of ideal':>9}"
        f"{'CPU/call':>10}{'stub':>8}{'client':>8}{'1-core cap':>11}"
    )
    with OpenAIStub(latency_s=args.latency, keep=16) as stub:
        for level in args.levels:
            ideal = level / args.latency
            calls = max(level, round(ideal * args.seconds))
            rows = [("RoleClient + OpenAIChatCompletionClient", coachlab_level)]
            if not args.no_raw:
                rows += [("httpx2 client alone", httpx_level), ("minimal socket client (the stub alone)", socket_level)]
            for label, run in rows:
                got = asyncio.run(run(stub, level, calls))
                cpu_us = got.cpu_per_call * 1e6
                stub_us = got.stub_cpu_per_call * 1e6 if got.stub_cpu_per_call is not None else float("nan")
                # One interpreter uses one core at most: at this CPU per call, the best it can do.
                cap = min(1.0, 1 / got.cpu_per_call / ideal)
                print(
                    f"{label:<40}{level:>5}{calls:>7}{got.rate:>9.1f}{ideal:>7.0f}{got.rate / ideal:>9.1%}"
                    f"{cpu_us:>8.0f}us{stub_us:>6.0f}us{cpu_us - stub_us:>6.0f}us{cap:>11.0%}"
                )
        print(f"stub served {stub.request_count} chat completions, {len(stub.errors)} reply errors")


if __name__ == "__main__":
    main()
