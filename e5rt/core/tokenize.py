"""Tokenization with the model's tokenizer.json: one batch encode, truncation counted, no padding yet."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tokenizers import Tokenizer

from ..errors import InputError, InvalidInputError, ManifestError

# Which end of an over-length text is cut: "right" keeps its beginning (the usual), "left" keeps its end.
Direction = Literal["right", "left"]


@dataclass(frozen=True)
class Encoded:
    ids: list[np.ndarray]  # one int64 array per text, special tokens included
    truncated: int  # how many texts lost tokens to max_length
    truncated_indices: tuple[int, ...] = ()  # which ones

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]


def read_tokenizer(path: Path) -> Tokenizer:
    """The model's tokenizer.json, or one ManifestError that names the file."""
    if not path.is_file():
        raise ManifestError(f"{path}: tokenizer file named by the manifest is missing")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise ManifestError(f"{path}: cannot read tokenizer ({exc})") from exc


class TextTokenizer:
    """Thin wrapper around tokenizers.Tokenizer with the manifest's max length."""

    def __init__(self, path: str | Path, max_length: int) -> None:
        path = Path(path)
        self._tok = read_tokenizer(path)
        self.max_length = max_length
        # Padding happens per batch in the runtime; truncation is configured here, not taken from the file.
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self._path = path
        # Counted once: get_vocab_size builds the whole vocabulary (250k pieces: ~0.3 s) on every call.
        self._vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self._untruncated: Tokenizer | None = None
        self._lock = threading.Lock()
        # An empty text keeps all its special tokens under any max_length >= 2.
        specials = self._tok.encode("", add_special_tokens=True).ids
        self.prefix = np.asarray(specials[:1], dtype=np.int64) if specials else np.zeros(0, np.int64)
        self.suffix = np.asarray(specials[1:], dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def encode(self, texts: list[str], direction: Direction = "right") -> Encoded:
        """Encode with truncation to max_length, counting texts that were cut.

        direction="left" cuts the beginning of an over-length text instead of its end (TEI's
        truncation_direction); the special tokens stay where they are either way.
        """
        if direction == "left":
            return self._encode_keep_end(texts)
        if direction != "right":
            raise InvalidInputError(f"truncation direction must be 'right' or 'left', got {direction!r}")
        ids, cut = [], []
        for i, (row, overflowed) in enumerate(_encode_ids(self._tok, texts, add_special_tokens=True)):
            ids.append(row)
            if overflowed:
                cut.append(i)
        return Encoded(ids=ids, truncated=len(cut), truncated_indices=tuple(cut))

    def _encode_keep_end(self, texts: list[str]) -> Encoded:
        return self.fit(self.encode_content(texts), "left")

    def fit(self, contents: list[np.ndarray], direction: Direction = "right") -> Encoded:
        """Token ids without special tokens (one array per text), cut to max_length from the given end and
        wrapped in the special tokens, counting the texts that were cut."""
        window = self.max_length - self.n_special
        ids, cut = [], []
        for i, content in enumerate(contents):
            if len(content) > window:
                content = content[len(content) - window :] if direction == "left" else content[:window]
                cut.append(i)
            ids.append(self.wrap(content))
        return Encoded(ids=ids, truncated=len(cut), truncated_indices=tuple(cut))

    @property
    def _full(self) -> Tokenizer:
        """A second, untruncated copy (truncation is per Tokenizer), loaded on first use: only chunking and
        token counting need it, and a 250k-piece vocabulary is not free to hold twice."""
        with self._lock:
            if self._untruncated is None:
                tok = Tokenizer.from_file(str(self._path))
                tok.no_padding()
                tok.no_truncation()
                self._untruncated = tok
            return self._untruncated

    def encode_content(self, texts: list[str]) -> list[np.ndarray]:
        """Encode without special tokens or truncation (for chunking long texts)."""
        return [row for row, _ in _encode_ids(self._full, texts, add_special_tokens=False)]

    def wrap(self, content: np.ndarray) -> np.ndarray:
        """Add the special tokens around a window of content ids."""
        return np.concatenate([self.prefix, content, self.suffix])

    def tokens(self, texts: list[str], add_special_tokens: bool = True) -> list[list[dict[str, Any]]]:
        """Every token of every text with its id, piece, character span and whether it is special (untruncated)."""
        out = []
        for text, enc in zip(texts, _encode_batch(self._full, texts, add_special_tokens), strict=True):
            specials = enc.special_tokens_mask
            out.append(
                [
                    {"id": i, "text": text[a:b] if b > a else piece, "special": bool(s), "start": a, "stop": b}
                    for i, piece, (a, b), s in zip(enc.ids, enc.tokens, enc.offsets, specials, strict=True)
                ]
            )
        return out

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(row) for row, _ in _encode_ids(self._full, texts, add_special_tokens=True)]


def unencodable_index(texts: list[str]) -> tuple[int, int] | None:
    """(text index, character position) of the first text that is not valid Unicode for UTF-8 (a lone
    surrogate, e.g. from a bad decode or a JSON '\\ud800' escape), or None."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return i, exc.start
    return None


# Texts per encode_batch call. A tokenizers Encoding holds ids, offsets, pieces and, past max_length, every
# overflowing window: 2,048 full-length texts in one call held 232 MB at once, 256 at a time 31 MB (me5-small-r,
# an OpenAI-sized request). It costs ~10 us a text (2,048 corpus texts: 150 ms against 128 ms), against
# milliseconds of inference per text.
_ENCODE_SLICE = 256


def _encode_ids(tok: Tokenizer, texts: list[str], add_special_tokens: bool) -> Iterator[tuple[np.ndarray, bool]]:
    """(ids, whether the text overflowed max_length) per text; the Encodings live one slice at a time."""
    for start in range(0, len(texts), _ENCODE_SLICE):
        for e in _encode_batch(tok, texts[start : start + _ENCODE_SLICE], add_special_tokens):
            yield np.asarray(e.ids, dtype=np.int64), bool(e.overflowing)


def _encode_batch(tok: Tokenizer, texts: list[str], add_special_tokens: bool) -> list[Any]:
    try:
        return list(tok.encode_batch(texts, add_special_tokens=add_special_tokens))
    except Exception as exc:  # tokenizers raises TypeError/Exception with its own wording; find the text
        bad = unencodable_index(texts)
        if bad is None:
            raise
        raise InputError(
            f"texts[{bad[0]}] cannot be encoded as UTF-8 (lone surrogate at character {bad[1]}); "
            "decode the input with errors='replace' or remove the character"
        ) from exc


class PairTokenizer:
    """(query, document) pairs through the model's own pair template (tokenizer.json's post-processor), cut to
    max_length from the document's end only: a cross-encoder scores the whole query against what fits of the
    document. A query that leaves no room for the document is an error, not a silent cut."""

    def __init__(self, path: str | Path, max_length: int) -> None:
        self._tok = read_tokenizer(Path(path))
        self.max_length = max_length
        self._tok.no_padding()
        # Queries are counted untruncated (a pair truncation strategy refuses single texts): a second copy.
        self._count = read_tokenizer(Path(path))
        self._count.no_padding()
        self._count.no_truncation()
        self._tok.enable_truncation(max_length, strategy="only_second")
        processor = self._tok.post_processor
        self.n_special = int(processor.num_special_tokens_to_add(True)) if processor is not None else 0

    def query_lengths(self, queries: list[str]) -> list[int]:
        """Content tokens of each query (no special tokens, no truncation)."""
        return [len(e.ids) for e in _encode_batch(self._count, queries, add_special_tokens=False)]

    def encode(self, queries: list[str], documents: list[str]) -> Encoded:
        """Pair ids (special tokens included), counting the documents that were cut."""
        room = self.max_length - self.n_special - 1  # at least one document token
        distinct = list(dict.fromkeys(queries))  # rerank() sends one query with every document: count it once
        for n in self.query_lengths(distinct):
            if n > room:
                raise InputError(
                    f"the query has {n} tokens; with the pair template's {self.n_special} special tokens this "
                    f"model takes queries of at most {room} tokens (max length {self.max_length}); shorten it"
                )
        pairs = list(zip(queries, documents, strict=True))
        ids, cut = [], []
        try:
            encodings = self._tok.encode_batch(pairs, add_special_tokens=True)
        except Exception as exc:  # a lone surrogate, as for single texts
            bad = unencodable_index([t for pair in pairs for t in pair])
            if bad is None:
                raise
            raise InputError(
                f"pair {bad[0] // 2} ({'query' if bad[0] % 2 == 0 else 'document'}) cannot be encoded as UTF-8 "
                f"(lone surrogate at character {bad[1]}); decode the input with errors='replace'"
            ) from exc
        for i, e in enumerate(encodings):
            ids.append(np.asarray(e.ids, dtype=np.int64))
            if e.overflowing:
                cut.append(i)
        return Encoded(ids=ids, truncated=len(cut), truncated_indices=tuple(cut))
