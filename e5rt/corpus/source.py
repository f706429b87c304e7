"""Streaming readers for corpus files: txt (a text per line), jsonl (an object per line) and Parquet.

A reader yields records one at a time from a resumable position, so memory never depends on the file's size:
text files are read line by line in binary and each line is decoded on its own (an undecodable line is one bad
record, not a failed run), and a line longer than `max_record_bytes` is skipped in pieces rather than loaded.
Parquet is read a record batch at a time (pyarrow, the `parquet` extra).

Every record carries its 1-based line (or row) number, which is also its id when no id field is named.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InvalidInputError

MAX_RECORD_BYTES = 8 * 1024 * 1024  # one line or row; texts are truncated to the model's max length anyway
PARQUET_READ_ROWS = 1024


class SourceError(InvalidInputError):
    """The input as a whole cannot be read: missing file, unknown format, a column that is not text."""


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line number (txt, jsonl) or row number (Parquet)
    id: Any  # the id field's value, or the line number
    text: str


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    raw: str  # the start of the offending line, for the rejects file

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason, "raw": self.raw}


@dataclass(frozen=True)
class Position:
    """Where reading resumes: a byte offset (text files) or a row index (Parquet), and the next line number."""

    offset: int = 0
    line: int = 1


Item = tuple[Record | Reject | None, Position]  # None: a blank line, counted but not a record


def detect_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    return "txt"


class Source:
    """One input file (or stdin). `size` is in the unit of `Position.offset`: bytes, or rows for Parquet."""

    def __init__(
        self,
        path: str,
        fmt: str | None = None,
        field: str = "text",
        id_field: str | None = None,
        encoding: str = "utf-8",
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.path = path
        self.fmt = fmt or ("txt" if path == "-" else detect_format(path))
        self.field = field
        self.id_field = id_field
        self.encoding = encoding
        self.max_record_bytes = max_record_bytes
        if path != "-":
            p = Path(path)
            if not p.is_file():
                raise SourceError(f"{path}: no such file" + (" (it is a directory)" if p.is_dir() else ""))
            if not os.access(p, os.R_OK):
                raise SourceError(f"{path}: cannot read (permission denied)")
        if self.fmt == "txt" and id_field:
            raise SourceError(f"--id-field {id_field}: a txt input has no fields; use jsonl or Parquet for ids")
        if self.fmt != "parquet":
            self._check_encoding()
        self._parquet: Any = self._open_parquet() if self.fmt == "parquet" else None

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == "-" else self.path

    # --- identity, for resume ----------------------------------------------------------------------------------
    @property
    def size(self) -> int | None:
        if self._parquet is not None:
            return int(self._parquet.metadata.num_rows)
        return None if self.path == "-" else os.path.getsize(self.path)

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resume."""
        if self.path == "-":
            return {"path": "-"}
        st = os.stat(self.path)
        return {"path": str(Path(self.path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}

    # --- reading -----------------------------------------------------------------------------------------------
    def read(self, start: Position | None = None) -> Iterator[Item]:
        """Records (or rejects, or None for blank lines) from `start`, each with the position after it."""
        start = start or Position()
        if self.fmt == "parquet":
            yield from self._read_parquet(start)
            return
        if self.path == "-":
            if start.offset:
                raise SourceError("stdin cannot be resumed; write the input to a file first")
            yield from self._read_lines(sys.stdin.buffer, start)
            return
        with open(self.path, "rb") as fh:
            fh.seek(start.offset)
            yield from self._read_lines(fh, start)

    def _check_encoding(self) -> None:
        try:
            newline = "\n".encode(self.encoding)
        except LookupError:
            raise SourceError(f"--encoding {self.encoding!r} is not an encoding Python knows") from None
        if newline != b"\n":  # utf-16/32 and the like
            raise SourceError(
                f"--encoding {self.encoding}: lines are not split on a single newline byte in this encoding; "
                "convert the file to utf-8 first (iconv -f ... -t utf-8)"
            )

    def _read_lines(self, fh: BinaryIO, start: Position) -> Iterator[Item]:
        offset, line = start.offset, start.line
        limit = self.max_record_bytes
        while True:
            raw = fh.readline(limit + 1)
            if not raw:
                return
            offset += len(raw)
            if len(raw) > limit and not raw.endswith(b"\n"):
                # A runaway line: skip the rest of it in bounded pieces and reject it.
                head = raw[:200]
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(limit + 1)
                    offset += len(raw)
                reason = f"line longer than {limit:,} bytes"
                yield Reject(line, reason, head.decode(self.encoding, "replace")), Position(offset, line + 1)
                line += 1
                continue
            yield self._parse_line(raw, line), Position(offset, line + 1)
            line += 1

    def _parse_line(self, raw: bytes, line: int) -> Record | Reject | None:
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            reason = (
                f"not valid {self.encoding} ({exc.reason} at byte {exc.start}); "
                "pass --encoding if the file uses another"
            )
            return Reject(line, reason, raw[:200].decode(self.encoding, "replace"))
        text = text.rstrip("\r\n")
        if not text.strip():
            return None
        if self.fmt == "txt":
            return Record(line, line, text)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            return Reject(line, f"not valid JSON ({exc.msg})", text[:200])
        return self._from_mapping(obj, line, text)

    def _from_mapping(self, obj: Any, line: int, raw: str) -> Record | Reject:
        if not isinstance(obj, dict):
            return Reject(line, "not a JSON object", raw[:200])
        if self.field not in obj:
            return Reject(line, f"no field {self.field!r} (use --field to pick another)", raw[:200])
        text = obj[self.field]
        if not isinstance(text, str):
            return Reject(line, f"field {self.field!r} is {type(text).__name__}, not a string", raw[:200])
        if not _encodable(text):
            return Reject(line, f"field {self.field!r} holds a lone surrogate (\\ud800-\\udfff escape)", raw[:200])
        rid: Any = line
        if self.id_field:
            if self.id_field not in obj or obj[self.id_field] is None:
                return Reject(line, f"no id field {self.id_field!r}", raw[:200])
            rid = obj[self.id_field]
            if not isinstance(rid, (str, int)) or isinstance(rid, bool):
                return Reject(
                    line, f"id field {self.id_field!r} is {type(rid).__name__}; ids are strings or integers", raw[:200]
                )
        return Record(line, rid, text)

    # --- Parquet -----------------------------------------------------------------------------------------------
    def _open_parquet(self) -> Any:
        if self.path == "-":
            raise SourceError("Parquet cannot be read from stdin; pass the file with -i")
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SourceError("reading Parquet needs pyarrow: pip install 'e5rt[parquet]'") from None
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"{self.path}: not a readable Parquet file ({exc})") from None
        schema = pf.schema_arrow
        for name, what in ((self.field, "--field"), (self.id_field, "--id-field")):
            if name is not None and name not in schema.names:
                raise SourceError(f"{self.path}: no column {name!r} ({what}); columns: {', '.join(schema.names)}")
        ftype = schema.field(self.field).type
        if not (pa.types.is_string(ftype) or pa.types.is_large_string(ftype)):
            raise SourceError(f"{self.path}: column {self.field!r} is {ftype}, not a string column")
        return pf

    def _read_parquet(self, start: Position) -> Iterator[Item]:
        pf = self._parquet
        columns = [self.field] + ([self.id_field] if self.id_field and self.id_field != self.field else [])
        # Skip whole row groups before the resume point, then the rest of the rows inside the first one read.
        row, groups = 0, []
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row + n <= start.offset:
                row += n
                continue
            groups.append(g)
        skip = start.offset - row
        for batch in pf.iter_batches(batch_size=PARQUET_READ_ROWS, row_groups=groups, columns=columns):
            texts = batch.column(self.field).to_pylist()
            ids = batch.column(self.id_field).to_pylist() if self.id_field else None
            for i, text in enumerate(texts):
                if skip:
                    skip -= 1
                    row += 1
                    continue
                line = row + 1
                row += 1
                pos = Position(row, row + 1)
                if text is None:
                    yield Reject(line, f"column {self.field!r} is null", ""), pos
                elif len(text) > self.max_record_bytes:
                    yield Reject(line, f"text longer than {self.max_record_bytes:,} characters", text[:200]), pos
                elif ids is None:
                    yield Record(line, line, text), pos
                elif ids[i] is None:
                    yield Reject(line, f"id column {self.id_field!r} is null", text[:200]), pos
                else:
                    yield Record(line, ids[i], text), pos


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
