"""Output of corpus runs: one part file per committed chunk, and the final file or dataset folder built from them.

Formats:
- `parquet`: columns `id`, optional `text`, and `embedding` as a fixed-size list of float32 (one row group a part);
- `npy`: float32 (rows, dim) arrays; in a folder, each shard `part-N.npy` has its ids in `part-N.ids.json`;
- `jsonl`: `{"id", "text", "embedding"}` per line.

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


def embedding_array(vecs: np.ndarray) -> Any:
    """(N, dim) float32 as an Arrow fixed-size list column, without copying the values."""
    pa = _pyarrow()
    flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])


def part_name(fmt: str, n: int) -> str:
    return f"part-{n:06d}.{fmt}"


def rejects_part_name(n: int) -> str:
    return f"part-{n:06d}.rejects.jsonl"


def write_part(
    folder: Path, fmt: str, n: int, ids: Sequence[Any], texts: Sequence[str] | None, vecs: np.ndarray
) -> str:
    """Write chunk n's rows as one part file; returns its name."""
    name = part_name(fmt, n)
    if fmt == "parquet":
        pa = _pyarrow()
        cols = {"id": pa.array(list(ids))}
        if texts is not None:
            cols["text"] = pa.array(list(texts), type=pa.string())
        cols["embedding"] = embedding_array(vecs)
        with committed(folder / name) as fh:
            pa.parquet.write_table(pa.table(cols), fh)
    elif fmt == "npy":
        with committed(folder / f"part-{n:06d}.ids.json", "w") as fh:
            json.dump(list(ids), fh, ensure_ascii=False)
        with committed(folder / name) as fh:
            np.save(fh, np.ascontiguousarray(vecs, dtype=np.float32))
    else:
        with committed(folder / name, "w") as fh:
            for i, rid in enumerate(ids):
                row: dict[str, Any] = {"id": rid}
                if texts is not None:
                    row["text"] = texts[i]
                row["embedding"] = [round(float(x), 7) for x in vecs[i]]
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return name


def part_rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return int(_pyarrow().parquet.read_metadata(path).num_rows)
    if fmt == "npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _npy_header(rows: int, dim: int) -> bytes:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = header.encode("latin1").ljust(_NPY_HEADER_BYTES - 10 - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def assemble(parts: Sequence[Path], fmt: str, out: Path, dim: int, rows: int) -> None:
    """Join part files into one output file, a part at a time; the rename at the end makes it appear whole."""
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
                schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32(), dim))])
                writer = pa.parquet.ParquetWriter(fh, schema)
            writer.close()
        elif fmt == "npy":
            fh.write(_npy_header(rows, dim))
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
