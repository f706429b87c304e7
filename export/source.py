"""Resolve an export SOURCE (hub id or local checkpoint directory) and read what the manifest needs from it."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e5rt.manifest import sha256_file
from e5rt.pull import HUB_ID

from .errors import (
    ExportError,
    ExportOptionError,
    HubUnreachableError,
    MissingTokenizerError,
    SourceUnavailableError,
    UnsupportedArchitectureError,
)

# model_type -> onnxruntime transformer-optimizer model type. These encoders share BERT's fusion patterns.
SUPPORTED_ARCHITECTURES = {"bert": "bert", "xlm-roberta": "bert", "roberta": "bert"}
_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


@dataclass
class Checkpoint:
    path: Path  # a local directory holding config.json, weights and tokenizer files
    source: dict[str, Any]  # what the manifest records about where it came from
    config: dict[str, Any]
    name: str
    st_files: dict[str, Any] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    def param_bytes(self) -> int:
        """Size of the weight files: an estimate of the fp32 graph's size."""
        total = 0
        for pattern in ("*.safetensors", "pytorch_model*.bin"):
            total += sum(p.stat().st_size for p in self.path.glob(pattern))
        return total


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: cannot read ({exc})") from exc


def input_hashes(path: Path) -> dict[str, str]:
    """sha256 of every regular file in a checkpoint directory (recorded, and used to prove exports don't touch it)."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and ".cache" not in p.parts:
            out[p.relative_to(path).as_posix()] = sha256_file(p)
    return out


def _download(repo_id: str, revision: str | None) -> tuple[Path, str]:
    """Fetch a hub snapshot (or reuse the local cache). Only config, weights and tokenizer files."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with the export extra
        raise SourceUnavailableError(
            "exporting from a hub id needs huggingface_hub (pip install 'e5rt[export]')"
        ) from exc
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "*.bin"]
    try:
        # Read the cache location now, not at huggingface_hub's import, so a caller's HF_HUB_CACHE applies.
        cache_dir = os.environ.get("HF_HUB_CACHE") or None
        local = snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=patterns, cache_dir=cache_dir)
    except LocalEntryNotFoundError as exc:  # offline, or the hub did not answer, and nothing cached
        raise HubUnreachableError(
            f"{repo_id}: cannot reach the Hugging Face hub and the model is not in the local cache "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). On a machine without network, "
            "download the checkpoint elsewhere and pass its local directory: e5rt export /path/to/checkpoint --out DIR"
        ) from exc
    except HfHubHTTPError as exc:
        raise HubUnreachableError(
            f"{repo_id}: the hub answered with an error ({exc}). Check the id and your token, or pass a local "
            "checkpoint directory instead: e5rt export /path/to/checkpoint --out DIR"
        ) from exc
    except Exception as exc:  # connection errors, offline mode with an empty cache, DNS failures
        raise HubUnreachableError(
            f"{repo_id}: cannot reach the Hugging Face hub and the model is not in the local cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). On a machine without network, "
            "download the checkpoint elsewhere and pass its local directory: e5rt export /path/to/checkpoint --out DIR"
        ) from exc
    path = Path(local)
    return path, path.name  # snapshot folders are named by commit hash


def resolve_source(source: str, revision: str | None = None) -> Checkpoint:
    """A local directory is used in place; anything else that looks like a hub id is fetched (or read from cache)."""
    local = Path(source).expanduser()
    if local.is_dir():
        path = local.resolve()
        origin: dict[str, Any] = {"kind": "local", "id": str(path)}
    elif local.exists():
        raise ExportOptionError(f"{source}: is a file; pass a checkpoint directory or a hub id")
    elif HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        path, commit = _download(source, revision)
        origin = {"kind": "hub", "id": source, "revision": commit}
    else:
        raise ExportOptionError(f"{source}: no such directory, and not a valid hub id (owner/name)")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ExportOptionError(f"{path}: no config.json; is this a Hugging Face checkpoint directory?")
    config = _read_json(config_path)
    model_type = str(config.get("model_type", ""))
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{source}: architecture '{model_type or 'unknown'}' is not supported; "
            f"supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
        )
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise ExportOptionError(f"{path}: no weights (expected one of {', '.join(_WEIGHT_FILES)})")
    origin["files"] = input_hashes(path)
    if origin["kind"] == "hub":
        name = source.rstrip("/").split("/")[-1]
    else:
        # A local directory's own name, unless it is a generic one; the config's _name_or_path is often the
        # base model the checkpoint was fine-tuned from, so it comes last.
        generic = {"model", "models", "checkpoint", "snapshot", "onnx", "hf", "weights"}
        name = path.name if path.name.lower() not in generic else path.parent.name
        if not name:
            name = str(config.get("_name_or_path") or "model")
    st_files = {}
    for fname in (
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
    ):
        if (path / fname).is_file():
            st_files[fname] = _read_json(path / fname)
    return Checkpoint(path=path, source=origin, config=config, name=name.split("/")[-1], st_files=st_files)


def checkpoint_task(ckpt: Checkpoint) -> str:
    """'rerank' for a one-label sequence classifier (a cross-encoder: one relevance logit per pair), 'classify'
    for one with several labels (label scores per text or pair), 'embed' for an encoder."""
    archs = ckpt.config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return "embed"
    return "rerank" if num_labels(ckpt) == 1 else "classify"


def num_labels(ckpt: Checkpoint) -> int:
    labels = ckpt.config.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels else int(ckpt.config.get("num_labels", 2))


def classifier_head(ckpt: Checkpoint) -> dict[str, Any]:
    """A classifier's labels and how its logits become scores, from the checkpoint's config (as transformers'
    text-classification pipeline reads it): softmax over the labels for a single-label model, an independent
    sigmoid per label for problem_type multi_label_classification."""
    n = num_labels(ckpt)
    id2label = ckpt.config.get("id2label") or {}
    names = {str(i): str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)}
    problem = ckpt.config.get("problem_type") or "single_label_classification"
    if problem not in ("single_label_classification", "multi_label_classification"):
        raise UnsupportedArchitectureError(
            f"{ckpt.path}: problem_type {problem!r}; e5rt exports single- and multi-label classifiers"
        )
    activation = "sigmoid" if problem == "multi_label_classification" else "softmax"
    return {"num_labels": n, "id2label": names, "problem_type": problem, "activation": activation}


def default_pooling(ckpt: Checkpoint) -> str:
    """From the sentence-transformers pooling config; mean when there is none (the E5 convention)."""
    pooling = ckpt.st_files.get("1_Pooling/config.json")
    if isinstance(pooling, dict):
        if pooling.get("pooling_mode_cls_token"):
            return "cls"
        if pooling.get("pooling_mode_mean_tokens"):
            return "mean"
        raise ExportOptionError(
            f"{ckpt.path}: the sentence-transformers pooling config asks for a mode e5rt does not implement "
            f"({pooling}); pass --pooling mean or --pooling cls to choose one deliberately"
        )
    return "mean"


def default_prompt_scheme(name: str) -> str:
    """instruct for e5 *-instruct models, query-passage for other e5 models, none otherwise."""
    lowered = name.lower()
    if "e5" in lowered and "instruct" in lowered:
        return "instruct"
    if re.search(r"(^|[-_/])e5([-_]|$)", lowered) or lowered.startswith(("e5-", "multilingual-e5", "me5")):
        return "query-passage"
    return "none"


def position_limit(ckpt: Checkpoint) -> int:
    """The longest sequence the position table allows."""
    positions = int(ckpt.config.get("max_position_embeddings", 512))
    # RoBERTa-family position tables reserve pad_token_id + 1 slots before the first real position.
    return positions - 2 if ckpt.model_type in ("xlm-roberta", "roberta") else positions


def default_max_length(ckpt: Checkpoint) -> int:
    """sentence-transformers' max_seq_length, else the tokenizer's limit, else the position table's."""
    limit = position_limit(ckpt)
    st = ckpt.st_files.get("sentence_bert_config.json")
    if isinstance(st, dict) and isinstance(st.get("max_seq_length"), int):
        return min(int(st["max_seq_length"]), limit)
    tok_cfg = ckpt.path / "tokenizer_config.json"
    if tok_cfg.is_file():
        value = _read_json(tok_cfg).get("model_max_length")
        if isinstance(value, int) and 0 < value < 100_000:
            return min(value, limit)
    return limit


# Whose ids the exported tokenizer.json gives. transformers 5 builds its tokenizer from the class's own pipeline
# (XLM-R: split on whitespace, then Metaspace), so a text ending in whitespace gets no final '▁' piece; the
# checkpoint's tokenizer.json run by the tokenizers library (transformers 4, TEI) keeps one. sentence-transformers
# 6 tokenizes through transformers 5, so a checkpoint's export follows it unless asked otherwise (--tokenizer).
TOKENIZER_MODES = ("transformers", "tokenizers")


def prepare_tokenizer(ckpt: Checkpoint, dest: Path, mode: str = "transformers") -> dict[str, Any]:
    """Write tokenizer.json to dest and return the manifest's record of where its ids come from.

    transformers: the tokenizer transformers' AutoTokenizer builds from the checkpoint, serialized (the ids
    sentence-transformers gives). tokenizers: the checkpoint's tokenizer.json as it is (converted from the slow
    files when it has none)."""
    src = ckpt.path / "tokenizer.json"
    if mode == "tokenizers" and src.is_file():
        dest.write_bytes(src.read_bytes())
        return {"mode": mode, "from": "the checkpoint's tokenizer.json, as the tokenizers library runs it"}
    slow = [
        f
        for f in ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json")
        if (ckpt.path / f).is_file()
    ]
    if not slow:
        raise MissingTokenizerError(
            f"{ckpt.path}: no tokenizer (expected tokenizer.json, or vocab.txt / sentencepiece.bpe.model to convert); "
            "copy the model's tokenizer files into the checkpoint directory"
        )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(ckpt.path), local_files_only=True)
        backend = tok.backend_tokenizer
    except Exception as exc:
        raise MissingTokenizerError(
            f"{ckpt.path}: could not build a fast tokenizer from {', '.join(slow)} ({exc})"
        ) from exc
    backend.no_truncation()  # e5rt truncates to the manifest's max_length itself
    backend.no_padding()
    backend.save(str(dest))
    return {
        "mode": mode,
        "from": f"{type(tok).__name__} of transformers {transformers.__version__}, serialized",
    }


def pad_token_id(ckpt: Checkpoint, tokenizer_path: Path) -> int:
    value = ckpt.config.get("pad_token_id")
    if isinstance(value, int):
        return value
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    for piece in ("<pad>", "[PAD]"):
        tid = tok.token_to_id(piece)
        if tid is not None:
            return int(tid)
    return 0
