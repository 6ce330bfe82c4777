"""How many threads numpy's OpenBLAS runs a matrix product on, read and set through ctypes.

The offline embedding model (`coachlab.library.embedding`) runs its own worker threads, one per
core, and wants each matrix product on the thread that asked for it: OpenBLAS's own threads
spin-wait for one another, and when another process holds the cores (the embedded chat model, a
second job) one MiniLM query took 130-300 ms with two OpenBLAS threads against 24 ms with one on
the shared 2-core machine. Setting `OPENBLAS_NUM_THREADS=1` before numpy is imported does the same
for the whole process; `set_blas_threads` does it after the fact.

Only OpenBLAS is handled (what the numpy wheels for Linux and Windows bundle, and common system
builds): it is found among the libraries loaded into the process (Linux) and next to numpy.
Anything else (Apple's Accelerate, MKL) is left alone and the functions say so by returning None.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["blas_threads", "set_blas_threads"]

logger = logging.getLogger(__name__)

_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
_GETTERS = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
)


def _candidates() -> Iterator[str]:
    """Paths of OpenBLAS libraries loaded into this process or bundled with numpy."""
    maps = Path("/proc/self/maps")
    if sys.platform.startswith("linux") and maps.is_file():
        seen: set[str] = set()
        for line in maps.read_text(encoding="utf-8", errors="replace").splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if "openblas" in os.path.basename(path).lower() and path not in seen:
                seen.add(path)
                yield path
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return
    root = Path(np.__file__).parent
    for folder in (root.parent / "numpy.libs", root / ".dylibs"):
        if folder.is_dir():
            yield from (str(p) for p in sorted(folder.iterdir()) if "openblas" in p.name.lower())


@cache
def _openblas() -> tuple[Any, Any] | None:
    """The (setter, getter) pair of numpy's OpenBLAS, or None when there is none to find."""
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, s) for s in _SETTERS if hasattr(lib, s)), None)
        getter = next((getattr(lib, g) for g in _GETTERS if hasattr(lib, g)), None)
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            return setter, getter
    return None


def blas_threads() -> int | None:
    """The threads OpenBLAS runs a matrix product on, or None when numpy's BLAS is not a known OpenBLAS."""
    found = _openblas()
    return None if found is None else int(found[1]())


def set_blas_threads(threads: int) -> int | None:
    """Make OpenBLAS run each matrix product on `threads` threads, for the whole process.

    Returns:
        The number it ran on before, or None when numpy's BLAS is not a known OpenBLAS (nothing changed).
    """
    found = _openblas()
    if found is None:
        logger.debug("numpy's BLAS is not a known OpenBLAS: its thread count is left alone")
        return None
    setter, getter = found
    before = int(getter())
    if before != threads:
        setter(threads)
        logger.info("OpenBLAS threads: %d (was %d)", threads, before)
    return before
