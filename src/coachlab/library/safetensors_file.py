"""`read_safetensors`: the tensors of a `.safetensors` file as numpy arrays, without the safetensors package.

The format: 8 bytes (little-endian length of the header), a JSON header mapping each tensor's name
to its dtype, shape and byte range in the data, then the raw little-endian data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from coachlab.errors import UsageError

__all__ = ["read_safetensors"]

_DTYPES = {
    **{"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1"},
    **{"BOOL": "?", "BF16": "<u2"},  # bfloat16 is read as 16-bit words, then widened to float32
}


def read_safetensors(path: Path) -> dict[str, NDArray[Any]]:
    """The tensors of a `.safetensors` file, as read-only numpy arrays over a memory map.

    bfloat16 tensors are returned as float32 copies.

    Raises:
        UsageError: The file is missing, truncated or not safetensors (the message says which).
    """
    size = path.stat().st_size if path.is_file() else -1
    if size < 8:
        raise UsageError(f"{path} is not a safetensors file ({'missing' if size < 0 else 'too short'}).")
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    length = int.from_bytes(raw[:8].tobytes(), "little")
    if length > size - 8:
        raise UsageError(f"{path} is not a safetensors file (its header claims {length:,} bytes).")
    try:
        header = json.loads(raw[8 : 8 + length].tobytes())
    except ValueError as exc:
        raise UsageError(f"{path} is not a safetensors file (the header is not JSON: {exc}).") from None
    if not isinstance(header, dict):
        raise UsageError(f"{path} is not a safetensors file (the header is not a JSON object).")
    data = raw[8 + length :]
    tensors: dict[str, NDArray[Any]] = {}
    for name, entry in cast(dict[str, Any], header).items():
        if name == "__metadata__":
            continue
        try:
            kind, shape, (begin, end) = entry["dtype"], [int(d) for d in entry["shape"]], entry["data_offsets"]
            dtype = np.dtype(_DTYPES[kind])
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{path}: tensor {name!r} has an unreadable entry {entry!r}.") from None
        if not 0 <= begin <= end <= data.size or end - begin != math.prod(shape) * dtype.itemsize:
            raise UsageError(f"{path}: tensor {name!r} ({kind} {shape}) does not fit its bytes {begin}..{end}.")
        array = data[begin:end].view(dtype).reshape(shape)
        if kind == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array
    return tensors
