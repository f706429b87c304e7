"""Tokenization with the model's tokenizer (tokenizer.json, or the compact sentencepiece model the export checked
against it): one batch encode, truncation counted, no padding yet."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

from ..errors import InputError, InvalidInputError, ManifestError, TooLongError
from .compact import CompactEncoder, CompactSpec, available, shared_encoder

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
    from tokenizers import Tokenizer  # not imported by a model with a compact tokenizer (~25 ms, a few MB)

    if not path.is_file():
        raise ManifestError(f"{path}: tokenizer file named by the manifest is missing")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise ManifestError(f"{path}: cannot read tokenizer ({exc})") from exc


# One untruncated Tokenizer per tokenizer file content, shared by every model that has it: an embedder and a
# reranker of one family, a model loaded in two variants, and a reranker's pair and text views all hold one copy
# (XLM-R's 250k-piece vocabulary takes ~0.5 s and ~300 MB per load, measured on me5-small-r's tokenizer.json).
# Truncation is e5rt's own (TextTokenizer.fit, PairTokenizer.encode), so nobody ever reconfigures the shared
# object; encoding on one from several threads is safe (tokenizers' encode takes &self).
_SHARED: dict[str, Tokenizer] = {}
_SHARED_LOCK = threading.Lock()


def shared_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer in `path`, without padding or truncation, loaded once per process per file content."""
    if not path.is_file():
        raise ManifestError(f"{path}: tokenizer file named by the manifest is missing")
    key = hashlib.sha256(path.read_bytes()).hexdigest()
    with _SHARED_LOCK:
        tok = _SHARED.get(key)
        if tok is None:
            tok = read_tokenizer(path)
            tok.no_padding()
            tok.no_truncation()
            _SHARED[key] = tok
        return tok


def compact_loader(path: Path, compact: CompactSpec | None) -> CompactEncoder | None:
    """The compact tokenizer of tokenizer.json's model directory (its sentencepiece model loading in the
    background), or None to use tokenizer.json (no compact record, or no sentencepiece package)."""
    if compact is None or not available():
        return None

    def reference(text: str) -> list[int]:  # the rare texts the compact tokenizer hands back (e5rt.core.compact)
        return list(shared_tokenizer(path).encode(text, add_special_tokens=False).ids)

    return shared_encoder(path.parent, compact, reference)


class TextTokenizer:
    """The model's tokenizer with its max length: tokenizer.json through tokenizers, or, where the export wrote one
    (`compact`), the sentencepiece model with the same ids in a quarter of the memory (e5rt.core.compact)."""

    def __init__(self, path: str | Path, max_length: int, compact: CompactSpec | None = None) -> None:
        path = Path(path)
        self.path = path
        self.max_length = max_length
        # Padding happens per batch in the runtime, truncation in fit(): neither is taken from the file.
        self._compact = compact_loader(path, compact)
        self._compact_spec = compact if self._compact is not None else None
        if self._compact_spec is not None:
            self._vocab_size = self._compact_spec.vocab_size
            prefix, suffix = self._compact_spec.single
        else:
            tok = shared_tokenizer(path)
            # Counted once: get_vocab_size builds the whole vocabulary (250k pieces: ~0.3 s) on every call.
            self._vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
            # An empty text keeps all its special tokens under any max_length >= 2.
            specials = tok.encode("", add_special_tokens=True).ids
            prefix, suffix = tuple(specials[:1]), tuple(specials[1:])
        self.prefix = np.asarray(prefix, dtype=np.int64)
        self.suffix = np.asarray(suffix, dtype=np.int64)

    @property
    def _tok(self) -> Tokenizer:
        """tokenizer.json (loaded on first use where a compact tokenizer encodes: only tokens() needs it)."""
        return shared_tokenizer(self.path)

    @property
    def compact(self) -> bool:
        """Whether the compact tokenizer encodes."""
        return self._compact is not None

    def pairs(self) -> PairTokenizer:
        """The pair tokenizer of the same model (same file, same compact tokenizer) for rerankers and classifiers."""
        return PairTokenizer(self.path, self.max_length, self._compact_spec)

    def wait(self) -> None:
        """Block until the tokenizer is loaded (a load error is raised here)."""
        if self._compact is not None:
            self._compact.wait()

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def encode(self, texts: list[str], direction: Direction = "right", max_length: int | None = None) -> Encoded:
        """Encode with truncation to max_length (the model's, or a shorter one given), counting texts that were
        cut.

        direction="left" cuts the beginning of an over-length text instead of its end (TEI's
        truncation_direction); the special tokens stay where they are either way.
        """
        if direction not in ("right", "left"):
            raise InvalidInputError(f"truncation direction must be 'right' or 'left', got {direction!r}")
        return self.fit(self.encode_content(texts), direction, max_length)

    def fit(self, contents: list[np.ndarray], direction: Direction = "right", max_length: int | None = None) -> Encoded:
        """Token ids without special tokens (one array per text), cut to max_length (at most the model's) from
        the given end and wrapped in the special tokens, counting the texts that were cut."""
        limit = self.max_length if max_length is None else min(max_length, self.max_length)
        window = limit - self.n_special
        if window < 1:
            raise InvalidInputError(
                f"a limit of {limit} tokens leaves no room for text beside the {self.n_special} special tokens",
                param="max_tokens",
            )
        ids, cut = [], []
        for i, content in enumerate(contents):
            if len(content) > window:
                content = content[len(content) - window :] if direction == "left" else content[:window]
                cut.append(i)
            ids.append(self.wrap(content))
        return Encoded(ids=ids, truncated=len(cut), truncated_indices=tuple(cut))

    def encode_content(self, texts: list[str]) -> list[np.ndarray]:
        """Encode without special tokens or truncation (for chunking long texts)."""
        if self._compact is not None:
            return _compact_ids(self._compact, texts)
        return list(_encode_ids(self._tok, texts, add_special_tokens=False))

    def wrap(self, content: np.ndarray) -> np.ndarray:
        """Add the special tokens around a window of content ids."""
        return np.concatenate([self.prefix, content, self.suffix])

    def tokens(self, texts: list[str], add_special_tokens: bool = True) -> list[list[dict[str, Any]]]:
        """Every token of every text with its id, piece, character span and whether it is special (untruncated)."""
        out = []
        for text, enc in zip(texts, _encode_batch(self._tok, texts, add_special_tokens), strict=True):
            specials = enc.special_tokens_mask
            out.append(
                [
                    {"id": i, "text": text[a:b] if b > a else piece, "special": bool(s), "start": a, "stop": b}
                    for i, piece, (a, b), s in zip(enc.ids, enc.tokens, enc.offsets, specials, strict=True)
                ]
            )
        return out

    def count_tokens(self, texts: list[str]) -> list[int]:
        if self._compact is not None:
            return [len(row) + self.n_special for row in self.encode_content(texts)]
        return [len(row) for row in _encode_ids(self._tok, texts, add_special_tokens=True)]


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


def _encode_ids(tok: Tokenizer, texts: list[str], add_special_tokens: bool) -> Iterator[np.ndarray]:
    """The ids of each text; the Encodings live one slice at a time."""
    for start in range(0, len(texts), _ENCODE_SLICE):
        for e in _encode_batch(tok, texts[start : start + _ENCODE_SLICE], add_special_tokens, offset=start):
            yield np.asarray(e.ids, dtype=np.int64)


# Up to this many texts are encoded one by one: encode_batch costs ~10 us more for one text (20 against 10 us for a
# one-line corpus query, me5-small-r's tokenizer), and the server tokenizes such requests on its event loop.
_ONE_BY_ONE = 4


def _encode_batch(tok: Tokenizer, texts: list[str], add_special_tokens: bool, offset: int = 0) -> list[Any]:
    """Encodings of texts (a slice of the caller's list starting at `offset`, for the error's index)."""
    try:
        if len(texts) <= _ONE_BY_ONE:
            return [tok.encode(text, add_special_tokens=add_special_tokens) for text in texts]
        return list(tok.encode_batch(texts, add_special_tokens=add_special_tokens))
    except Exception as exc:  # tokenizers raises TypeError/Exception with its own wording; find the text
        err = _not_utf8(texts, offset)
        if err is None:
            raise
        raise err from exc


def _compact_ids(encoder: CompactEncoder, texts: list[str]) -> list[np.ndarray]:
    try:
        return encoder.encode(texts)
    except Exception as exc:  # sentencepiece raises a RuntimeError ("Unable to cast ...") for a lone surrogate
        err = _not_utf8(texts, 0)
        if err is None:
            raise
        raise err from exc


def _not_utf8(texts: list[str], offset: int, pairs: bool = False) -> InputError | None:
    """The one clear error for a text that is not valid UTF-8, or None if none is (the tokenizer's own error then
    stands). pairs: texts are query, document, query, ... and the error names the pair."""
    bad = unencodable_index(texts)
    if bad is None:
        return None
    where = (
        f"pair {offset + bad[0] // 2} ({'query' if bad[0] % 2 == 0 else 'document'})"
        if pairs
        else f"texts[{offset + bad[0]}]"
    )
    return InputError(
        f"{where} cannot be encoded as UTF-8 (lone surrogate at character {bad[1]}); "
        "decode the input with errors='replace' or remove the character"
    )


class PairTokenizer:
    """(query, document) pairs through the model's own pair template (tokenizer.json's post-processor), cut to
    max_length from the document's end only: a cross-encoder scores the whole query against what fits of the
    document. A query that leaves no room for the document is an error, not a silent cut. With a compact tokenizer
    the template is the manifest's record of that post-processor, around each text's own ids (tokenizers encodes
    the two texts of a pair apart too)."""

    def __init__(self, path: str | Path, max_length: int, compact: CompactSpec | None = None) -> None:
        self.path = Path(path)
        self.max_length = max_length
        self._compact = compact_loader(self.path, compact)
        if compact is not None and self._compact is not None:
            self._template: tuple[tuple[int, ...], ...] | None = compact.pair
            self.n_special = sum(len(part) for part in compact.pair)
        else:
            self._template = None
            processor = self._tok.post_processor  # untruncated: encode() cuts the document itself
            self.n_special = int(processor.num_special_tokens_to_add(True)) if processor is not None else 0

    @property
    def _tok(self) -> Tokenizer:
        return shared_tokenizer(self.path)

    def query_lengths(self, queries: list[str]) -> list[int]:
        """Content tokens of each query (no special tokens, no truncation)."""
        if self._compact is not None:
            return [len(row) for row in _compact_ids(self._compact, queries)]
        return [len(e.ids) for e in _encode_batch(self._tok, queries, add_special_tokens=False)]

    def encode(self, queries: list[str], documents: list[str]) -> Encoded:
        """Pair ids (special tokens included), counting the documents that were cut."""
        room = self.max_length - self.n_special - 1  # at least one document token
        distinct = list(dict.fromkeys(queries))  # rerank() sends one query with every document: count it once
        for n in self.query_lengths(distinct):
            if n > room:
                raise TooLongError(
                    f"the query has {n} tokens; with the pair template's {self.n_special} special tokens this "
                    f"model takes queries of at most {room} tokens (max length {self.max_length}); shorten it"
                )
        pairs = list(zip(queries, documents, strict=True))
        ids, cut = [], []
        for start in range(0, len(pairs), _ENCODE_SLICE):  # the Encodings live one slice at a time
            for i, (row, was_cut) in enumerate(self._pair_rows(pairs[start : start + _ENCODE_SLICE], start), start):
                ids.append(row)
                if was_cut:
                    cut.append(i)
        return Encoded(ids=ids, truncated=len(cut), truncated_indices=tuple(cut))

    def _pair_rows(self, pairs: list[tuple[str, str]], offset: int) -> Iterator[tuple[np.ndarray, bool]]:
        """Each pair's ids within max_length, and whether its document was cut. As truncation="only_second":
        the document's last tokens go, the query and the template's tokens stay (the query check in encode()
        leaves at least one document token)."""
        flat = [text for pair in pairs for text in pair]
        if self._compact is not None and self._template is not None:
            try:
                content = self._compact.encode(flat)
            except Exception as exc:  # sentencepiece's RuntimeError for a lone surrogate
                err = _not_utf8(flat, offset, pairs=True)
                if err is None:
                    raise
                raise err from exc
            before, between, after = (np.asarray(part, dtype=np.int64) for part in self._template)
            for query, doc in zip(content[::2], content[1::2], strict=True):
                over = len(query) + len(doc) + self.n_special - self.max_length
                if over > 0:
                    doc = doc[: len(doc) - over]
                yield np.concatenate([before, query, between, doc, after]), over > 0
            return
        try:
            encodings = list(self._tok.encode_batch(pairs, add_special_tokens=True))
        except Exception as exc:  # a lone surrogate, as for single texts
            err = _not_utf8(flat, offset, pairs=True)
            if err is None:
                raise
            raise err from exc
        for e in encodings:
            row = np.asarray(e.ids, dtype=np.int64)
            over = len(row) - self.max_length
            if over > 0:  # the document's tokens are those of sequence id 1
                doc = np.flatnonzero(np.fromiter((s == 1 for s in e.sequence_ids), bool, len(row)))
                row = np.delete(row, doc[len(doc) - over :])
            yield row, over > 0
