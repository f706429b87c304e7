"""Embed a corpus file of any size on one machine: bounded memory, committed chunk by chunk, resumable.

The input is read as a stream and cut into chunks of at most `chunk_size` records or `chunk_bytes` of text.
Each chunk goes through `Embedder.embed` (so it is length-sorted and token-budgeted exactly like an in-memory
call), is written as one part file, and only then is the state file updated with the input position after it.
A kill at any moment therefore loses at most the chunk in flight: `resume=True` deletes parts the state does
not list, seeks the input to the recorded position and carries on, and the chunks it cuts are the same as an
uninterrupted run's, so the final output is the same, every record once, in input order.

Memory: one chunk of text (≤ chunk_bytes), its token ids and its embeddings, on top of the loaded model; never
the file. Bad records either stop the run (`on_error="fail"`, the default) or are counted and written with
their line numbers to a rejects file (`on_error="skip"`); nothing is dropped silently.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from ..core.quantize import CALIBRATED
from ..errors import InvalidInputError
from ..progress import Meter
from . import sinks
from .source import Position, Record, Reject, Source

if TYPE_CHECKING:
    from ..engine import Embedder

STATE_FILE = "_e5rt_state.json"
INDEX_FILE = "_index.json"  # underscore: Parquet readers skip it, so pq.read_table(folder) just works
REJECTS_FILE = "_rejects.jsonl"
STATE_VERSION = 1

OnError = Literal["fail", "skip"]


class CorpusError(InvalidInputError):
    """A corpus run cannot start or go on: a bad record under on_error='fail', an unusable output, a mismatch
    between a resume and the run it continues."""


@dataclass(frozen=True)
class Output:
    """Where a corpus run writes: a single file (`.parquet`, `.npy`, `.jsonl`) or a folder of shards."""

    path: Path
    fmt: str
    folder: bool

    @classmethod
    def parse(cls, out: str | Path, fmt: str | None = None) -> Output:
        text = str(out)
        path = Path(text)
        suffix = path.suffix.lower().lstrip(".")
        folder = text.endswith(("/", "\\")) or path.is_dir() or not suffix
        if fmt is not None and fmt not in sinks.FORMATS:
            raise CorpusError(f"--format {fmt}: use one of {', '.join(sinks.FORMATS)}")
        if not folder and suffix not in sinks.FORMATS:
            raise CorpusError(
                f"-o {out}: unknown output type {path.suffix!r}; "
                "use .parquet, .npy or .jsonl, or a folder (end it with /)"
            )
        if not folder:
            if fmt is not None and fmt != suffix:
                raise CorpusError(f"-o {out}: the suffix says {suffix} but --format says {fmt}; make them agree")
            fmt = suffix
        elif fmt is None:
            fmt = "parquet"
        if folder and fmt == "jsonl":
            raise CorpusError(f"-o {out}: jsonl is written as one file; name it out.jsonl")
        return cls(path, fmt, folder)

    @property
    def work(self) -> Path:
        """Where parts and state live until the run finishes: the folder itself, or a hidden sibling folder."""
        return self.path if self.folder else self.path.with_name(f".{self.path.name}.e5rt-work")

    @property
    def rejects(self) -> Path:
        return self.path / REJECTS_FILE if self.folder else self.path.with_name(self.path.stem + ".rejects.jsonl")


@dataclass(frozen=True)
class CorpusOptions:
    kind: str = "passage"
    task: str | None = None
    long_text: str = "truncate"
    with_text: bool | None = None  # default: only jsonl carries the text
    on_error: OnError = "fail"
    chunk_size: int = 2048
    chunk_bytes: int = 16 * 1024 * 1024
    precision: str = "float32"  # or int8 / uint8 / binary / ubinary (calibrated), binary-sign / ubinary-sign

    def texts_kept(self, fmt: str) -> bool:
        return fmt == "jsonl" if self.with_text is None else self.with_text


@dataclass
class Summary:
    records: int = 0
    rejected: int = 0
    blank: int = 0
    tokens: int = 0
    truncated: int = 0
    chunks: int = 0
    resumed_at_line: int = 0  # 0: a fresh run
    embed_seconds: float = 0.0
    seconds: float = 0.0
    output: str = ""
    rejects_file: str | None = None
    id_type: str | None = None
    position: dict[str, int] = field(default_factory=lambda: asdict(Position()))

    @property
    def texts_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


# --- the state file --------------------------------------------------------------------------------------------
def _config(emb: Embedder, source: Source, output: Output, opts: CorpusOptions) -> dict[str, Any]:
    """Everything that decides the output's bytes; a resume must match it exactly."""
    manifest = emb.manifest
    return {
        "input": source.fingerprint(),
        "input_format": source.fmt,
        "field": source.field,
        "id_field": source.id_field,
        "encoding": source.encoding,
        "model": str(emb.model_dir.resolve()) if emb.model_dir else (emb.spec.name or "in-memory"),
        "model_name": manifest.name if manifest else emb.spec.name,
        "variant": emb.variant,
        "dim": emb.dim,
        "max_batch_tokens": emb.max_batch_tokens,
        "format": output.fmt,
        "folder": output.folder,
        "kind": opts.kind,
        "task": opts.task,
        "long_text": opts.long_text,
        "with_text": opts.texts_kept(output.fmt),
        "on_error": opts.on_error,
        "chunk_size": opts.chunk_size,
        "chunk_bytes": opts.chunk_bytes,
        "precision": opts.precision,
    }


def _vector_metadata(emb: Embedder, opts: CorpusOptions) -> dict[str, Any] | None:
    """What a reader of quantized vectors needs: the precision, the model's dim, and the calibration that
    decided every level and bit (None for float32)."""
    if opts.precision == "float32":
        return None
    calibration = emb.calibration if opts.precision in CALIBRATED else None
    return {
        "precision": opts.precision,
        "dim": emb.dim,
        "layout": "e5rt.core.quantize (Cohere / sentence-transformers byte layouts)",
        "calibration": calibration.as_manifest() if calibration is not None else None,
    }


def _width(emb: Embedder, precision: str) -> int:
    """Values per stored vector: dim, or dim/8 bytes of packed bits."""
    return emb.dim if precision in ("float32", "int8", "uint8") else -(-emb.dim // 8)


def _prepare(output: Output, config: dict[str, Any], resume: bool, restart: bool) -> Summary | None:
    """Make the work area ready; returns the saved progress when continuing an unfinished run."""
    work, state_path = output.work, output.work / STATE_FILE
    if output.path.exists() and not output.folder and output.path.is_dir():
        raise CorpusError(f"-o {output.path}: is a directory; name a file or end the path with /")
    parent = output.path.parent if str(output.path.parent) else Path(".")
    if not parent.is_dir():
        raise CorpusError(f"-o {output.path}: folder {parent} does not exist; create it first")
    if restart and work.exists():
        if output.folder:
            _clear_folder(work)
        else:
            shutil.rmtree(work)
    if state_path.is_file():
        try:
            saved = json.loads(state_path.read_text(encoding="utf-8"))
            saved["summary"]["position"]["line"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CorpusError(f"{state_path}: unreadable state file; pass --restart to start over") from None
        if not resume:
            raise CorpusError(
                f"-o {output.path}: an unfinished run is there "
                f"(line {saved['summary']['position']['line']:,} reached); "
                "pass --resume to continue it or --restart to start over"
            )
        if saved.get("version") != STATE_VERSION:
            raise CorpusError(f"{state_path}: written by another e5rt version; pass --restart to start over")
        for key, value in config.items():
            if saved["config"].get(key) != value:
                raise CorpusError(
                    f"cannot resume: the unfinished run had {key}={saved['config'].get(key)!r}, this one {value!r}; "
                    "rerun with the same input and options, or pass --restart"
                )
        try:
            summary = Summary(**saved["summary"])
        except TypeError:
            raise CorpusError(f"{state_path}: unreadable state file; pass --restart to start over") from None
        # Parts beyond the last committed chunk belong to a chunk that was in flight when the run died, and
        # hidden .tmp files are writes a kill interrupted.
        for stale in work.glob("part-*"):
            number = stale.name[5:11]
            if number.isdigit() and int(number) >= summary.chunks:
                stale.unlink()
        for tmp in work.glob(".*.tmp"):
            tmp.unlink()
        summary.resumed_at_line = summary.position["line"]
        return summary
    if output.folder and work.exists() and any(work.iterdir()):
        what = "a finished run" if (work / INDEX_FILE).exists() else "other files"
        raise CorpusError(f"-o {output.path}: the folder holds {what}; pick an empty folder or pass --restart")
    work.mkdir(parents=True, exist_ok=True)
    return None


def _clear_folder(folder: Path) -> None:
    """--restart on a folder output: remove only what a corpus run writes there."""
    for path in folder.iterdir():
        if path.name.startswith(("part-", ".part-")) or path.name in (STATE_FILE, INDEX_FILE, REJECTS_FILE):
            path.unlink()


def _save_state(output: Output, config: dict[str, Any], summary: Summary) -> None:
    data = {"version": STATE_VERSION, "config": config, "summary": asdict(summary)}
    sinks.write_json(output.work / STATE_FILE, data)


# --- the run ---------------------------------------------------------------------------------------------------
def embed_corpus(
    emb: Embedder,
    source: Source,
    output: Output,
    options: CorpusOptions | None = None,
    *,
    resume: bool = False,
    restart: bool = False,
    meter: Meter | None = None,
) -> Summary:
    """Stream `source` through `emb` into `output`; see the module docstring for the guarantees."""
    opts = options or CorpusOptions()
    if opts.chunk_size < 1 or opts.chunk_bytes < 1:
        raise CorpusError("chunk_size and chunk_bytes must be positive")
    emb.check_precision(opts.precision)  # before any output: an older export has no calibration
    if output.fmt == "npy" and opts.with_text:
        raise CorpusError("--with-text applies to parquet and jsonl output; .npy holds vectors only")
    config = _config(emb, source, output, opts)
    started = time.monotonic()
    summary = _prepare(output, config, resume, restart) or Summary()
    try:
        return _run(emb, source, output, opts, config, summary, meter, started)
    except CorpusError:
        _abandon(output)  # a bad record under on_error='fail': the input must change, nothing to resume
        raise


def _run(
    emb: Embedder,
    source: Source,
    output: Output,
    opts: CorpusOptions,
    config: dict[str, Any],
    summary: Summary,
    meter: Meter | None,
    started: float,
) -> Summary:
    previous_seconds = summary.seconds
    keep_text = opts.texts_kept(output.fmt)
    if meter is not None and summary.resumed_at_line:
        meter.base = summary.position["offset"]

    run_texts = run_tokens = 0
    metadata = _vector_metadata(emb, opts)
    position = Position(**summary.position)
    for chunk in read_chunks(source, position, opts, summary):
        n = summary.chunks
        if chunk.records:
            t0 = time.monotonic()
            result = _embed(emb, chunk.records, opts)
            summary.embed_seconds += time.monotonic() - t0
            texts = [r.text for r in chunk.records] if keep_text else None
            ids = [r.id for r in chunk.records]
            sinks.write_part(output.work, output.fmt, n, ids, texts, result.embeddings, opts.precision, metadata)
            summary.tokens += result.stats.tokens
            summary.truncated += result.stats.truncated
            run_tokens += result.stats.tokens
        if chunk.rejects:
            with sinks.committed(output.work / sinks.rejects_part_name(n), "w") as fh:
                for rej in chunk.rejects:
                    fh.write(json.dumps(rej.as_dict(), ensure_ascii=False) + "\n")
        summary.records += len(chunk.records)
        summary.rejected += len(chunk.rejects)
        summary.blank += chunk.blank
        run_texts += len(chunk.records)
        summary.chunks = n + 1
        position = chunk.end
        summary.position = asdict(position)
        summary.seconds = previous_seconds + time.monotonic() - started
        _save_state(output, config, summary)  # the commit point: everything before `position` is on disk
        if meter is not None:
            meter(position.offset, run_texts, run_tokens)
    _finish(output, config, summary, _width(emb, opts.precision), opts.precision, metadata)
    summary.seconds = previous_seconds + time.monotonic() - started
    if meter is not None:
        meter(position.offset, run_texts, run_tokens, final=True)
    return summary


@dataclass
class Chunk:
    records: list[Record]
    rejects: list[Reject]
    blank: int
    end: Position  # the input position after the chunk's last line


def read_chunks(source: Source, start: Position, opts: CorpusOptions, summary: Summary) -> Iterator[Chunk]:
    """Cut the stream into chunks. Cuts depend only on the input and the options, so a resumed run cuts the
    same chunks as an uninterrupted one. Bad records raise under on_error='fail'. Always yields at least one
    chunk, so an empty input still makes a (valid, empty) output."""
    chunk = Chunk([], [], 0, start)
    size, yielded = 0, False
    for item, after in source.read(start):
        chunk.end = after
        if item is None:
            chunk.blank += 1
            continue
        if isinstance(item, Record) and summary.id_type is not None and _id_type(item.id) != summary.id_type:
            reason = f"id {item.id!r} is a {_id_type(item.id)}, earlier ids are {summary.id_type}s"
            item = Reject(item.line, reason, item.text[:200])
        if isinstance(item, Reject):
            if opts.on_error == "fail":
                raise CorpusError(
                    f"{source.name}:{item.line}: {item.reason}; pass --on-error skip to write bad records to a "
                    "rejects file and go on"
                )
            chunk.rejects.append(item)
        else:
            summary.id_type = summary.id_type or _id_type(item.id)
            chunk.records.append(item)
            size += len(item.text)
        if len(chunk.records) + len(chunk.rejects) >= opts.chunk_size or size >= opts.chunk_bytes:
            yield chunk
            yielded = True
            chunk, size = Chunk([], [], 0, after), 0
    if chunk.records or chunk.rejects or chunk.blank or not yielded:
        yield chunk


def _embed(emb: Embedder, records: list[Record], opts: CorpusOptions) -> Any:
    return emb.embed(
        [r.text for r in records],
        kind=opts.kind,  # type: ignore[arg-type]
        task=opts.task,
        long_text=opts.long_text,  # type: ignore[arg-type]
        precision=opts.precision,
    )


def stream_jsonl(emb: Embedder, source: Source, stream: IO[str], options: CorpusOptions | None = None) -> Summary:
    """The same chunked run written as jsonl to a stream (stdout): no work area, so not resumable."""
    opts = options or CorpusOptions()
    summary = Summary(output="<stdout>")
    started = time.monotonic()
    for chunk in read_chunks(source, Position(), opts, summary):
        for rej in chunk.rejects:
            sys.stderr.write(f"e5rt: skipped {source.name}:{rej.line}: {rej.reason}\n")
        if chunk.records:
            result = _embed(emb, chunk.records, opts)
            for rec, vec in zip(chunk.records, result.embeddings, strict=True):
                values = [round(float(x), 7) for x in vec] if opts.precision == "float32" else [int(x) for x in vec]
                row = {"id": rec.id, "text": rec.text, "embedding": values}
                stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            summary.tokens += result.stats.tokens
            summary.truncated += result.stats.truncated
        summary.records += len(chunk.records)
        summary.rejected += len(chunk.rejects)
        summary.blank += chunk.blank
        summary.chunks += 1
    summary.seconds = time.monotonic() - started
    return summary


def _id_type(value: Any) -> str:
    return "int" if isinstance(value, int) else "string"


def _abandon(output: Output) -> None:
    """A bad record under on_error='fail': the input must change before a rerun, so no resumable work is kept."""
    if output.folder:
        _clear_folder(output.work)
    else:
        shutil.rmtree(output.work, ignore_errors=True)


def _finish(
    output: Output,
    config: dict[str, Any],
    summary: Summary,
    width: int,
    precision: str = "float32",
    metadata: dict[str, Any] | None = None,
) -> None:
    work = output.work
    chunks = range(summary.chunks)
    parts = [p for n in chunks if (p := work / sinks.part_name(output.fmt, n)).exists()]
    reject_parts = [p for n in chunks if (p := work / sinks.rejects_part_name(n)).exists()]
    output.rejects.unlink(missing_ok=True)
    if reject_parts:
        sinks.append_rejects(reject_parts, output.rejects)
        summary.rejects_file = str(output.rejects)
    summary.output = str(output.path)
    if output.folder:
        shards = [{"file": p.name, "chunk": int(p.name[5:11]), "rows": sinks.part_rows(p, output.fmt)} for p in parts]
        index = {"config": config, "rows": summary.records, "shards": shards, "summary": asdict(summary)}
        if metadata is not None:
            index["vectors"] = metadata
        for p in reject_parts:
            p.unlink()
        sinks.write_json(work / INDEX_FILE, index)
        (work / STATE_FILE).unlink()
    else:
        sinks.assemble(parts, output.fmt, output.path, width, summary.records, precision, metadata)
        if metadata is not None and output.fmt != "parquet":  # .npy and .jsonl have no place for it inside
            sinks.write_json(output.path.with_name(output.path.name + ".e5rt.json"), metadata)
        shutil.rmtree(work)
