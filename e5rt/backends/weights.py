"""A graph's weights read once, for several ONNX Runtime sessions of it to share.

A server that runs one batch on all its threads, or two side by side on half as many, needs two sessions of
one graph (ONNX Runtime fixes the thread count per session). Each would hold its own copy of the weights;
handed the same arrays through SessionOptions.add_initializer, they hold one.

The runtime does not depend on the onnx package, so this reads the few protobuf fields it needs itself
(onnx.proto: ModelProto.graph = 7, GraphProto.initializer = 5; TensorProto dims = 1, data_type = 2, name = 8,
raw_data = 9, external_data = 13). A tensor it cannot read (another encoding, a type numpy lacks) is left out,
and the sessions each load their own copy of that one.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IntegrityError

# TensorProto.DataType -> numpy (bfloat16 and the 4/8-bit float types have no numpy dtype: left to ORT)
_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}
# ONNX Runtime takes pre-allocated initializers of at least this many bytes (smaller ones feed shape inference).
MIN_SHARED_BYTES = 128


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message: an int for varints, (start, end) for length-delimited."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield number, wire, (pos, pos + size)
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise IntegrityError(f"protobuf wire type {wire} at byte {pos}: not an ONNX model")


def _tensor(buf: memoryview, span: tuple[int, int], base: Path) -> tuple[str, np.ndarray] | None:
    dims: list[int] = []
    dtype = name = raw = None
    external: dict[str, str] = {}
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == 0:
            dims.append(int(value))
        elif number == 1 and wire == 2:  # packed dims
            lo, hi = value
            while lo < hi:
                d, lo = _varint(buf, lo)
                dims.append(d)
        elif number == 2:
            dtype = _DTYPES.get(int(value))
        elif number == 8:
            name = bytes(buf[value[0] : value[1]]).decode()
        elif number == 9:
            raw = value
        elif number == 13:
            entry = {n: bytes(buf[v[0] : v[1]]).decode() for n, _, v in _fields(buf, *value)}
            external[entry.get(1, "")] = entry.get(2, "")
    if name is None or dtype is None:
        return None
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    nbytes = count * np.dtype(dtype).itemsize
    if nbytes < MIN_SHARED_BYTES:
        return None
    if raw is not None:
        if raw[1] - raw[0] != nbytes:
            return None
        array: np.ndarray = np.frombuffer(buf[raw[0] : raw[1]], dtype=dtype).copy()  # aligned, and the file can close
    elif "location" in external:
        path = base / external["location"]
        offset = int(external.get("offset", 0))
        if int(external.get("length", nbytes)) != nbytes or not path.is_file():
            return None
        array = np.fromfile(path, dtype=dtype, count=count, offset=offset)
        if array.size != count:
            return None
    else:
        return None  # typed fields (float_data, ...): small tensors, left to ONNX Runtime
    return name, array.reshape(dims)


def read_initializers(model_path: str | Path) -> dict[str, np.ndarray]:
    """The graph's initializers of MIN_SHARED_BYTES or more, by name, as arrays that own their memory."""
    path = Path(model_path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        buf = memoryview(mapped)
        try:
            out: dict[str, np.ndarray] = {}
            for number, wire, graph in _fields(buf, 0, len(buf)):
                if number != 7 or wire != 2:
                    continue
                for n, w, span in _fields(buf, *graph):
                    if n == 5 and w == 2 and (item := _tensor(buf, span, path.parent)) is not None:
                        out[item[0]] = item[1]
            return out
        except (IndexError, UnicodeDecodeError, IntegrityError) as exc:  # cut short, or not protobuf at all
            raise IntegrityError(f"{path}: cannot read the graph's weights ({exc}); export the model again") from None
        finally:
            buf.release()
