"""Output of corpus runs: one part file per committed chunk, and the final file or dataset folder built from them.

Formats:
- `parquet`: columns `id`, optional `text`, and `embedding` as a fixed-size list of float32 (one row group a part);
- `npy`: float32 (rows, dim) arrays; in a folder, each shard `part-N.npy` has its ids in `part-N.ids.json`;
- `jsonl`: `{"id", "text", "embedding"}` per line.

With a precision other than float32 (e5rt.core.quantize) the vectors are int8 / uint8 (rows, dim) or packed bits
(rows, dim/8): Parquet's `embedding` is then a fixed-size list of int8 / uint8, or, for ubinary, fixed-size binary
(the packed bytes); `.npy` arrays are int8 / uint8; jsonl rows carry integers. The precision and the model's
calibration ranges go into the Parquet schema's metadata (key `e5rt`), a folder's `_index.json`, and, for a single
`.npy` or `.jsonl` file, a `<file>.e5rt.json` beside it.

A single-file output (`out.parquet`, `out.npy`, `out.jsonl`) is assembled from the parts at the end, one part in
memory at a time, into a temporary name that is renamed into place; a folder output keeps the parts as its shards
and gains an `index.json`. Every file is written under a temporary name and renamed, so a kill never leaves a
half-written part behind a name that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import InvalidInputError

FORMATS = ("parquet", "npy", "jsonl")
_NPY_HEADER_BYTES = 128  # a fixed header length, so the final shape can be written after the rows are counted


@contextmanager
def committed(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary sibling, flush it to disk, then rename it to `path` (atomic against kills)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    with committed(path, "w") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=1)


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401  (loads pa.parquet)
    except ImportError:
        raise InvalidInputError(
            "Parquet output needs pyarrow: pip install 'e5rt[parquet]', or write .npy / .jsonl"
        ) from None
    return pa


def embedding_array(vecs: np.ndarray, precision: str = "float32") -> Any:
    """(N, width) vectors as an Arrow column, without copying the values: a fixed-size list of their dtype
    (float32, int8, uint8), or fixed-size binary for packed ubinary bits."""
    pa = _pyarrow()
    if precision in ("ubinary", "ubinary-sign"):
        data = np.ascontiguousarray(vecs, dtype=np.uint8)
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(data.shape[1]), len(data), [None, pa.py_buffer(data.tobytes())]
        )
    dtype = np.float32 if precision == "float32" else vecs.dtype
    flat = pa.array(np.ascontiguousarray(vecs, dtype=dtype).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])


def embedding_type(precision: str, width: int) -> Any:
    """The Arrow type embedding_array gives (for an empty output's schema)."""
    pa = _pyarrow()
    if precision in ("ubinary", "ubinary-sign"):
        return pa.binary(width)
    item = {"float32": pa.float32(), "uint8": pa.uint8()}.get(precision, pa.int8())
    return pa.list_(item, width)


def part_name(fmt: str, n: int) -> str:
    return f"part-{n:06d}.{fmt}"


def rejects_part_name(n: int) -> str:
    return f"part-{n:06d}.rejects.jsonl"


def write_part(
    folder: Path,
    fmt: str,
    n: int,
    ids: Sequence[Any],
    texts: Sequence[str] | None,
    vecs: np.ndarray,
    precision: str = "float32",
    metadata: dict[str, Any] | None = None,
) -> str:
    """Write chunk n's rows as one part file; returns its name. metadata: what a Parquet part carries in its
    schema (the precision and calibration of quantized vectors)."""
    name = part_name(fmt, n)
    if fmt == "parquet":
        pa = _pyarrow()
        cols = {"id": pa.array(list(ids))}
        if texts is not None:
            cols["text"] = pa.array(list(texts), type=pa.string())
        cols["embedding"] = embedding_array(vecs, precision)
        table = pa.table(cols)
        if metadata is not None:
            table = table.replace_schema_metadata({"e5rt": json.dumps(metadata)})
        with committed(folder / name) as fh:
            pa.parquet.write_table(table, fh)
    elif fmt == "npy":
        with committed(folder / f"part-{n:06d}.ids.json", "w") as fh:
            json.dump(list(ids), fh, ensure_ascii=False)
        with committed(folder / name) as fh:
            np.save(fh, np.ascontiguousarray(vecs, dtype=np.float32 if precision == "float32" else vecs.dtype))
    else:
        with committed(folder / name, "w") as fh:
            for i, rid in enumerate(ids):
                row: dict[str, Any] = {"id": rid}
                if texts is not None:
                    row["text"] = texts[i]
                if precision == "float32":
                    row["embedding"] = [round(float(x), 7) for x in vecs[i]]
                else:
                    row["embedding"] = [int(x) for x in vecs[i]]
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return name


def part_rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return int(_pyarrow().parquet.read_metadata(path).num_rows)
    if fmt == "npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _npy_header(rows: int, dim: int, descr: str = "<f4") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = header.encode("latin1").ljust(_NPY_HEADER_BYTES - 10 - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def _npy_descr(precision: str) -> str:
    if precision == "float32":
        return "<f4"
    return "|u1" if precision in ("uint8", "ubinary", "ubinary-sign") else "|i1"


def assemble(
    parts: Sequence[Path],
    fmt: str,
    out: Path,
    dim: int,
    rows: int,
    precision: str = "float32",
    metadata: dict[str, Any] | None = None,
) -> None:
    """Join part files into one output file, a part at a time; the rename at the end makes it appear whole.
    dim: the width of a stored vector (dim/8 bytes for packed bits)."""
    with committed(out) as fh:
        if fmt == "parquet":
            pa = _pyarrow()
            writer = None
            for part in parts:
                table = pa.parquet.read_table(part)
                if writer is None:
                    writer = pa.parquet.ParquetWriter(fh, table.schema)
                writer.write_table(table)
            if writer is None:  # no rows at all: still a valid, empty file with the expected columns
                schema = pa.schema([("id", pa.int64()), ("embedding", embedding_type(precision, dim))])
                if metadata is not None:
                    schema = schema.with_metadata({"e5rt": json.dumps(metadata)})
                writer = pa.parquet.ParquetWriter(fh, schema)
            writer.close()
        elif fmt == "npy":
            fh.write(_npy_header(rows, dim, _npy_descr(precision)))
            for part in parts:
                arr = np.load(part, mmap_mode="r")
                fh.write(np.ascontiguousarray(arr).tobytes())
        else:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)


def append_rejects(parts: Sequence[Path], out: Path) -> None:
    with committed(out) as fh:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, fh)
