"""The model directory's manifest: the one contract between export/ and the runtime.

The runtime trusts nothing the manifest does not say, so parsing is strict: every field is checked for
presence and type, and a mismatch raises ManifestError naming the field.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .core.compact import CompactSpec
from .core.quantize import Calibration
from .cpu import exact_int8_needed
from .errors import IntegrityError, ManifestError, ModelNotFoundError, VariantError

log = logging.getLogger("e5rt")

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
POOLINGS = ("mean", "cls", "logits")  # logits: a cross-encoder graph's output, one row per pair


class ModelKind(str, Enum):
    """What a model does, resolved once when its manifest is read: everything else asks the kind, never a string."""

    EMBED = "embed"  # a vector per text
    RERANK = "rerank"  # a relevance score per (query, document) pair
    CLASSIFY = "classify"  # label scores per text or pair

    @property
    def words(self) -> str:
        return {"embed": "a text embedder", "rerank": "a reranker", "classify": "a sequence classifier"}[self.value]

    @property
    def scores(self) -> bool:
        """Whether the graph gives logits (a scoring head) rather than hidden states to pool."""
        return self is not ModelKind.EMBED


TASKS = tuple(k.value for k in ModelKind)
ACTIVATIONS = ("sigmoid", "softmax", "none")
PROMPT_SCHEMES = ("instruct", "query-passage", "none")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class FileEntry:
    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Parity:
    min_cos: float
    mean_cos: float
    max_abs_diff: float
    n_texts: int
    threshold: float
    passed: bool
    worst_text: str = ""


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    files: tuple[FileEntry, ...]
    providers: tuple[str, ...]
    optimizations: dict[str, Any]
    quantization: dict[str, Any] | None
    parity: Parity
    packed: bool = False
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def model_file(self) -> str:
        """The .onnx file (external data files are listed after it)."""
        return self.files[0].path

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's vector is the same alone and in any batch: measured at export (each probe alone
        against batched) where the manifest has it; older manifests: float graphs yes, dynamic int8 no."""
        measured = self.raw.get("batch_invariant")
        if isinstance(measured, bool):
            return measured
        return self.precision != "int8" or str((self.quantization or {}).get("method", "")).lower() == "static"

    @property
    def exact_int8_needed(self) -> bool:
        """Whether this CPU must run the variant in ORT's exact u8u8 mode (s8 weights, x86 without VNNI)."""
        weight_type = (self.quantization or {}).get("weight_type") if self.precision == "int8" else None
        return exact_int8_needed(weight_type)

    @property
    def int8_path(self) -> str | None:
        """Which int8 scheme this variant's graph runs, in a few words (None for a float variant)."""
        if self.precision != "int8":
            return None
        q = self.quantization or {}
        if q.get("method") == "static":
            if "attention" not in q:  # exported before the QKV rewrite
                qkv = "fused Attention fp32"
            elif "attention_qattention" in q:
                qkv = "QKV int8 in QAttention" if q["attention_qattention"] else "no fused Attention"
            else:  # exported with the QKV MatMul + MultiHeadAttention rewrite (before QAttention)
                qkv = "QKV int8 + MultiHeadAttention" if q.get("attention_rewritten", 1) else "no fused Attention"
            return f"static scales, {qkv}, preset {q.get('preset', 'all')}"
        if q.get("method") == "dynamic":
            return f"dynamic per-tensor scales, preset {q.get('preset', 'all')}"
        return str(q.get("method", "unknown"))

    def measured_slower_than_fp32(self) -> bool:
        """The export timed this int8 graph slower than fp32 on its CPU."""
        speed = self.raw.get("cpu_speed") if self.precision == "int8" else None
        return isinstance(speed, dict) and float(speed.get("speedup_vs_fp32", 1.0)) < 1.0


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    name: str
    source: dict[str, Any]
    architecture: dict[str, Any]
    pooling: str
    normalize: bool
    prompt_scheme: str
    max_length: int
    tokenizer: str
    pad_token_id: int
    synthetic: bool
    variants: dict[str, Variant]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    kind: ModelKind = ModelKind.EMBED
    # The sentencepiece model the export checked against tokenizer.json (e5rt.core.compact); None: use tokenizer.json
    compact_tokenizer: CompactSpec | None = None
    # Per-dimension output ranges and bit thresholds for int8 / binary vectors (e5rt.core.quantize); None: older
    # exports and scoring models
    output_calibration: Calibration | None = None

    @property
    def task(self) -> str:
        """The kind's name as the manifest writes it (embed, rerank, classify)."""
        return self.kind.value

    @property
    def dim(self) -> int:
        """Width of what the graph gives per input: the embedding size, or a scoring head's label count."""
        if self.kind.scores:
            return int(self.head.get("num_labels", 1))
        return int(self.architecture["hidden_size"])

    @property
    def head(self) -> dict[str, Any]:
        """A scoring model's head record (the manifest's "rerank" or "classify" object): num_labels, sep_token_id
        (two-segment pairs), activation, and a classifier's labels; {} for an embedder."""
        value = self.raw.get(self.kind.value) if self.kind.scores else None
        return value if isinstance(value, dict) else {}

    @property
    def activation(self) -> str:
        """How a scoring head's logits become scores by default: sigmoid, softmax, or none."""
        return str(self.head.get("activation", "sigmoid"))

    @property
    def labels(self) -> list[str]:
        """A classifier's label names by index (from the checkpoint's id2label); LABEL_i where none is given."""
        id2label = self.head.get("id2label") or {}
        return [str(id2label.get(str(i), f"LABEL_{i}")) for i in range(self.dim)]

    def pick(self, requested: str, provider: str) -> Variant:
        """The variant to load. 'auto' means fp16 on CUDA. On CPU: an int8 variant (int8-static first) that passed
        parity, is batch-invariant (measured at export) and was measured faster than fp32 at export; otherwise
        fp32; a batch-dependent int8 only where there is no fp32."""
        variants = self.variants
        if requested != "auto":
            if requested not in variants:
                raise VariantError(f"unknown variant {requested!r}; this model has: {', '.join(sorted(variants))}")
            return variants[requested]
        order = ["fp16", "fp32"] if provider in ("cuda", "tensorrt") else ["int8-static", "int8", "fp32"]
        has_fp32 = "fp32" in variants
        for name in order:
            v = variants.get(name)
            if v is None or not v.parity.passed or provider not in v.providers:
                continue
            if v.precision == "int8" and has_fp32 and not v.batch_invariant:
                # A vector that changes with its batch breaks caches and reproducibility behind a batching server.
                log.info("e5rt: %s is batch-dependent; auto prefers fp32", name)
                continue
            if has_fp32 and v.measured_slower_than_fp32():
                log.info("e5rt: %s measured slower than fp32 at export; auto picks fp32", name)
                continue
            return v
        for v in variants.values():
            if provider in v.providers and v.parity.passed:
                return v
        listing = ", ".join(f"{n} ({'/'.join(v.providers)})" for n, v in variants.items())
        raise VariantError(
            f"no variant of this model passed export parity and runs on {provider}; available: {listing}"
        )


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ManifestError(f"manifest: missing field '{where}{key}'")
    value = obj[key]
    # bool is an int subclass; a bool where a number is expected is a schema error, and vice versa.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ManifestError(f"manifest: field '{where}{key}' must be {kind}, got bool")
    if not isinstance(value, kind):
        raise ManifestError(f"manifest: field '{where}{key}' must be {kind}, got {type(value).__name__}")
    return value


def _choice(obj: dict[str, Any], key: str, choices: tuple[str, ...], where: str = "") -> str:
    value = _get(obj, key, str, where)
    if value not in choices:
        raise ManifestError(f"manifest: field '{where}{key}' is {value!r}; expected one of {', '.join(choices)}")
    return str(value)


def _parse_variant(name: str, obj: Any) -> Variant:
    where = f"variants.{name}."
    if not isinstance(obj, dict):
        raise ManifestError(f"manifest: '{where[:-1]}' must be an object")
    files_raw = _get(obj, "files", list, where)
    if not files_raw:
        raise ManifestError(f"manifest: '{where}files' is empty")
    files = []
    for i, entry in enumerate(files_raw):
        fw = f"{where}files[{i}]."
        if not isinstance(entry, dict):
            raise ManifestError(f"manifest: '{fw[:-1]}' must be an object")
        path = _get(entry, "path", str, fw)
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise ManifestError(f"manifest: '{fw}path' must stay inside the model directory, got {path!r}")
        files.append(FileEntry(path=path, bytes=_get(entry, "bytes", int, fw), sha256=_get(entry, "sha256", str, fw)))
    par = _get(obj, "parity", dict, where)
    pw = f"{where}parity."
    parity = Parity(
        min_cos=float(_get(par, "min_cos", (int, float), pw)),
        mean_cos=float(_get(par, "mean_cos", (int, float), pw)),
        max_abs_diff=float(_get(par, "max_abs_diff", (int, float), pw)),
        n_texts=_get(par, "n_texts", int, pw),
        threshold=float(_get(par, "threshold", (int, float), pw)),
        passed=_get(par, "passed", bool, pw),
        worst_text=str(par.get("worst_text", "")),
    )
    providers = _get(obj, "providers", list, where)
    if not providers or not all(isinstance(p, str) for p in providers):
        raise ManifestError(f"manifest: '{where}providers' must be a non-empty list of strings")
    quant = obj.get("quantization")
    if quant is not None and not isinstance(quant, dict):
        raise ManifestError(f"manifest: '{where}quantization' must be an object or null")
    return Variant(
        name=name,
        precision=_choice(obj, "precision", PRECISIONS, where),
        files=tuple(files),
        providers=tuple(providers),
        optimizations=_get(obj, "optimizations", dict, where),
        quantization=quant,
        parity=parity,
        packed=bool(obj.get("packed", False)),
        raw=obj,
    )


def parse_manifest(data: Any) -> Manifest:
    """Validate a decoded manifest.json against the schema and return it typed."""
    if not isinstance(data, dict):
        raise ManifestError("manifest: top level must be a JSON object")
    version = _get(data, "schema_version", int, "")
    if version != SCHEMA_VERSION:
        raise ManifestError(f"manifest: schema_version {version} is not supported (this e5rt reads {SCHEMA_VERSION})")
    arch = _get(data, "architecture", dict, "")
    for key in ("model_type", "hidden_size", "num_layers", "num_heads", "vocab_size", "max_position_embeddings"):
        _get(arch, key, str if key == "model_type" else int, "architecture.")
    variants_raw = _get(data, "variants", dict, "")
    if not variants_raw:
        raise ManifestError("manifest: 'variants' is empty")
    kind = ModelKind(_choice(data, "task", TASKS)) if "task" in data else ModelKind.EMBED
    if kind.scores:
        _check_head(data, kind.value)
    max_length = _get(data, "max_length", int, "")
    if max_length < 2:
        raise ManifestError(f"manifest: 'max_length' must be >= 2, got {max_length}")
    return Manifest(
        schema_version=version,
        name=_get(data, "name", str, ""),
        source=_get(data, "source", dict, ""),
        architecture=arch,
        pooling=_choice(data, "pooling", POOLINGS),
        normalize=_get(data, "normalize", bool, ""),
        prompt_scheme=_choice(data, "prompt_scheme", PROMPT_SCHEMES),
        max_length=max_length,
        tokenizer=_get(data, "tokenizer", str, ""),
        pad_token_id=_get(data, "pad_token_id", int, ""),
        synthetic=_get(data, "synthetic", bool, ""),
        variants={name: _parse_variant(name, v) for name, v in variants_raw.items()},
        raw=data,
        kind=kind,
        compact_tokenizer=CompactSpec.parse(data["compact_tokenizer"]) if data.get("compact_tokenizer") else None,
        output_calibration=_calibration(data),
    )


def _calibration(data: dict[str, Any]) -> Calibration | None:
    raw = data.get("output_calibration")
    if raw is None:
        return None
    try:
        return Calibration.from_manifest(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"manifest: 'output_calibration' is malformed ({exc}); export the model again") from None


def _check_head(data: dict[str, Any], key: str) -> None:
    """A scoring model's head record: labels, separator, activation (and a classifier's label names)."""
    head = _get(data, key, dict, "")
    n = _get(head, "num_labels", int, f"{key}.")
    if n < 1:
        raise ManifestError(f"manifest: '{key}.num_labels' must be >= 1")
    sep = head.get("sep_token_id")
    if sep is not None and (isinstance(sep, bool) or not isinstance(sep, int)):
        raise ManifestError(f"manifest: '{key}.sep_token_id' must be an integer or null")
    if head.get("activation", "sigmoid") not in ACTIVATIONS:
        raise ManifestError(f"manifest: '{key}.activation' must be one of {', '.join(ACTIVATIONS)}")
    id2label = head.get("id2label")
    if id2label is not None and (
        not isinstance(id2label, dict) or sorted(id2label) != sorted(str(i) for i in range(n))
    ):
        raise ManifestError(f"manifest: '{key}.id2label' must name every label index 0..{n - 1}")


def load_manifest(model_dir: str | Path) -> Manifest:
    """Read and validate DIR/manifest.json."""
    path = Path(model_dir) / MANIFEST_NAME
    if not Path(model_dir).is_dir():
        raise ModelNotFoundError(f"{model_dir}: not a directory (expected a model directory written by 'e5rt export')")
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no manifest.json; is this a model directory written by 'e5rt export'?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    return parse_manifest(data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    """The manifest record for one file below root."""
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def verify_files(model_dir: str | Path, variant: Variant, stamps: Path | None = None) -> None:
    """Check every file of a variant against the recorded size and sha256.

    Hashing a file costs ~2 ms per MB (0.27 s for me5-small-r's int8 graph on a 2-core Zen 1, a quarter of a cold
    start), so a file that passed is remembered in `stamps` (default: the e5rt cache's verified/ folder) by its
    device, inode, size and modification time; while those are unchanged it is not hashed again. A replaced or
    rewritten file changes them. Without a writable cache every load hashes."""
    root = Path(model_dir)
    if stamps is None:
        from .config import environment

        stamps = environment().cache_dir / "verified"
    for entry in variant.files:
        path = root / entry.path
        if not path.is_file():
            raise IntegrityError(f"{path}: listed in the manifest for variant '{variant.name}' but missing")
        st = path.stat()
        if st.st_size != entry.bytes:
            raise IntegrityError(f"{path}: {st.st_size} bytes, manifest says {entry.bytes}")
        identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{entry.sha256}"
        stamp = stamps / hashlib.sha256(str(path.resolve()).encode()).hexdigest()
        try:
            if stamp.read_text(encoding="utf-8") == identity:
                continue
        except OSError:
            pass
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise IntegrityError(
                f"{path}: sha256 {actual[:16]}… does not match the manifest's {entry.sha256[:16]}…; "
                "the file was changed or damaged (pass verify=False to skip this check)"
            )
        try:
            stamps.mkdir(parents=True, exist_ok=True)
            stamp.write_text(identity, encoding="utf-8")
        except OSError:  # a read-only cache: hash again next time
            pass
