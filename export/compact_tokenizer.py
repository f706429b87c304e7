"""Writes the compact tokenizer (e5rt.core.compact): tokenizer.json's unigram vocabulary as a sentencepiece model,
kept only if it gives the same ids on every text it is checked on.

Only the shape XLM-R's tokenizer.json has is converted (a unigram model; the Precompiled normalization table
followed by collapsing runs of spaces; Metaspace with "▁" always prepended; special tokens matched in the raw
text): sentencepiece's own normalizer does exactly that, except for the two rules e5rt.core.compact applies
itself. Any other tokenizer keeps tokenizer.json alone, and the reason is returned for the export's log.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e5rt.core import CompactEncoder, CompactSpec, Special, pieces

FILE_NAME = "tokenizer.model"
_SPACE = "\u2581"
# sentencepiece_model.proto's SentencePiece.Type and TrainerSpec.ModelType
_NORMAL, _UNKNOWN, _CONTROL, _UNIGRAM = 1, 2, 3, 1


def _charsmap(data: dict[str, Any]) -> str:
    """The base64 normalization table of either layout (see layout)."""
    norm = data["normalizer"]
    return str(
        norm["normalizers"][0]["precompiled_charsmap"]
        if norm.get("type") == "Sequence"
        else norm["precompiled_charsmap"]
    )


def layout(data: dict[str, Any]) -> tuple[bool | None, str | None]:
    """Which of the two unigram layouts tokenizer.json has: (trailing_space, None), or (None, why neither).

    - The checkpoint's own (XLM-R's file, run by the tokenizers library): the Precompiled table, then runs of
      spaces collapsed; Metaspace with "▁" always prepended, not split. A text ending in a space keeps a final
      "▁": trailing_space True.
    - transformers 5's (what its XLMRobertaTokenizer builds, serialized): the Precompiled table alone; split on
      whitespace, then Metaspace split on "▁". Whitespace at the end of a text leaves nothing: trailing_space
      False, which is sentencepiece's own behaviour."""
    model = data.get("model") or {}
    if model.get("type") != "Unigram":
        return None, f"its model is {model.get('type')}, not Unigram"
    if model.get("byte_fallback"):
        return None, "it uses byte fallback"
    norm = data.get("normalizer") or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    collapse = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers", [])
        split_first = len(parts) == 2 and parts[0] == {"type": "WhitespaceSplit"}
        meta, trailing = (parts[1] if split_first else {}), False
        if len(steps) != 1 or steps[0].get("type") != "Precompiled":
            return None, "its normalizer is not the Precompiled table alone"
    else:
        meta, trailing = pre, True
        if len(steps) != 2 or steps[0].get("type") != "Precompiled" or steps[1] != collapse:
            return None, "its normalizer is not Precompiled followed by collapsing runs of spaces"
    prepend = meta.get("prepend_scheme", "always" if meta.get("add_prefix_space", True) else "never")
    if meta.get("type") != "Metaspace" or meta.get("replacement") != _SPACE or prepend != "always":
        return None, "its pre-tokenizer is not Metaspace('▁', always prepended), alone or after WhitespaceSplit"
    pieces = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    if _SPACE not in pieces:
        return None, "its vocabulary has no lone '▁' piece"
    for tok in data.get("added_tokens", []):
        if tok.get("normalized") or tok.get("single_word") or pieces.get(tok["content"]) != tok["id"]:
            return None, f"its added token {tok['content']!r} is normalized, single-word or outside the vocabulary"
    return trailing, None


def model_proto(data: dict[str, Any]) -> bytes:
    """The sentencepiece ModelProto of tokenizer.json's vocabulary: pieces in id order (so sentencepiece's ids are
    tokenizer.json's), the unknown piece, special tokens as control pieces, the same normalization table."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = data["model"]
    added = {tok["id"] for tok in data.get("added_tokens", [])}
    proto = pb.ModelProto()  # type: ignore[attr-defined]
    for i, (piece, score) in enumerate(model["vocab"]):
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, score
        entry.type = _UNKNOWN if i == model.get("unk_id") else _CONTROL if i in added else _NORMAL
    proto.trainer_spec.model_type = _UNIGRAM
    proto.trainer_spec.unk_id = int(model.get("unk_id") or 0)
    # The special-token ids are tokenizer.json's business (the manifest's template); sentencepiece adds none.
    proto.trainer_spec.bos_id = proto.trainer_spec.eos_id = proto.trainer_spec.pad_id = -1
    spec = proto.normalizer_spec
    spec.name = "tokenizer.json"
    spec.precompiled_charsmap = base64.b64decode(_charsmap(data))
    spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = True
    return bytes(proto.SerializeToString())


# Texts the piece table (e5rt.core.pieces) segments at export, before sentencepiece is waited for (its Python
# Viterbi takes ~1 ms per short text; the probes' first 300 are short to past max length).
_BRIDGE_CHECKED = 300


def _write_table(path: Path, proto: bytes) -> None:
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto.FromString(proto)  # type: ignore[attr-defined]
    rows = [(p.piece, p.score, p.type == _NORMAL) for p in model.pieces]
    unk = next(i for i, p in enumerate(model.pieces) if p.type == _UNKNOWN)
    pieces.write_table(path, rows, unk, model.normalizer_spec.SerializeToString())


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def table_keys(charsmap: bytes) -> list[bytes]:
    """Every key of a sentencepiece normalization table (its Darts double-array trie, as sentencepiece and
    tokenizers read it: a uint32 trie size, the trie's units, then the replacement strings)."""
    size = struct.unpack("<I", charsmap[:4])[0]
    units = np.frombuffer(charsmap[4 : 4 + size], dtype="<u4").astype(np.int64)

    def offset(unit: Any) -> Any:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    labels = np.arange(256)
    keys: list[bytes] = []
    stack = [(int(offset(units[0])), b"")]
    while stack:
        pos, prefix = stack.pop()
        child = pos ^ labels
        inside = child < len(units)
        found = np.where(inside, units[np.where(inside, child, 0)] & ((1 << 31) | 0xFF), -1) == labels
        for label in np.flatnonzero(found[1:]) + 1:
            unit = units[pos ^ label]
            key = prefix + bytes([label])
            if (unit >> 8) & 1:  # a leaf below: the key ends here
                keys.append(key)
            stack.append((int((pos ^ label) ^ offset(unit)), key))
    return keys


def mapped_ranges(charsmap: bytes) -> tuple[tuple[tuple[int, int], ...], str | None]:
    """The code points the table maps, as ranges; and why it cannot be used, if a key spans several characters
    (e5rt.core.compact relies on one-character keys to know where tokenizers and sentencepiece agree)."""
    points = []
    for key in table_keys(charsmap):
        text = key.decode("utf-8", "replace")
        if len(text) != 1:
            return (), f"its normalization table has a key of several characters ({text!r})"
        points.append(ord(text))
    ranges: list[list[int]] = []
    for point in sorted(points):
        if ranges and point == ranges[-1][1] + 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    return tuple((a, b) for a, b in ranges), None


def template(tok: Any) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...], ...]]:
    """The ids tokenizer.json's post-processor puts around one text and around a pair (read off its encodings
    through their sequence ids, so any template processor works)."""

    def parts(encoding: Any, n: int) -> list[tuple[int, ...]]:
        out: list[list[int]] = [[] for _ in range(n + 1)]
        seen = -1
        for i, seq in zip(encoding.ids, encoding.sequence_ids, strict=True):
            if seq is None:
                out[seen + 1].append(i)
            else:
                seen = seq
        return [tuple(p) for p in out]

    single = parts(tok.encode("a", add_special_tokens=True), 1)
    pair = parts(tok.encode("a", "b", add_special_tokens=True), 2)
    return (single[0], single[1]), tuple(pair)


def write(
    tokenizer_json: Path, texts: Sequence[str], pairs: Sequence[tuple[str, str]] = ()
) -> tuple[dict[str, Any] | None, str]:
    """Write tokenizer.model beside tokenizer.json if it gives the same ids on every text and pair; return
    (the manifest record with how many texts were checked, "") or (None, the reason it was not written)."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    trailing_space, reason = layout(data)
    if reason is not None:
        return None, reason
    mapped, reason = mapped_ranges(base64.b64decode(_charsmap(data)))
    if reason is not None:
        return None, reason
    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    single, pair = template(tok)
    out, table = tokenizer_json.parent / FILE_NAME, tokenizer_json.parent / pieces.FILE_NAME
    proto = model_proto(data)
    out.write_bytes(proto)
    _write_table(table, proto)
    spec = CompactSpec(
        path=FILE_NAME,
        table=pieces.FILE_NAME,
        vocab_size=int(tok.get_vocab_size(with_added_tokens=True)),
        space_id=int(tok.token_to_id(_SPACE) or 0),  # layout() checked the vocabulary has it
        specials=tuple(
            Special(t["content"], int(t["id"]), bool(t.get("lstrip")), bool(t.get("rstrip")))
            for t in data.get("added_tokens", [])
        ),
        single=single,
        pair=(pair[0], pair[1], pair[2]),
        mapped=mapped,
        trailing_space=bool(trailing_space),
    )
    encoder = CompactEncoder(
        out, table, spec, lambda text: list(tok.encode(text, add_special_tokens=False).ids), keep_table=True
    )
    bridge = [encoder.encode_one(text, by_table=True) for text in texts[:_BRIDGE_CHECKED]]
    encoder.wait()
    checked = list(texts) + [t for p in pairs for t in p]
    for text in checked:
        want = tok.encode(text, add_special_tokens=False).ids
        got = encoder.encode_one(text)
        if got != want:
            _remove(out, table)
            return None, f"ids differ from tokenizer.json on {text[:60]!r} ({got[:8]}... vs {want[:8]}...)"
    for text, got in zip(texts, bridge, strict=False):
        if got != tok.encode(text, add_special_tokens=False).ids:
            _remove(out, table)
            return None, f"the piece table's ids differ from tokenizer.json on {text[:60]!r}"
    for query, doc in pairs:
        want = tok.encode(query, doc, add_special_tokens=True).ids
        got = [*pair[0], *encoder.encode_one(query), *pair[1], *encoder.encode_one(doc), *pair[2]]
        if got != want:
            _remove(out, table)
            return None, f"pair ids differ from tokenizer.json on {query[:40]!r} / {doc[:40]!r}"
    record = spec.as_record()
    # by_reference: checked texts tokenizer.json encoded itself (a combining mark after a normalized character)
    record["checked"] = {
        "texts": len(checked),
        "pairs": len(pairs),
        "identical_ids": True,
        "by_reference": encoder.by_reference,
        "by_piece_table": len(bridge),
    }
    return record, ""
