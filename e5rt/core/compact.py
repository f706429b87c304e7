"""The compact tokenizer: a unigram vocabulary as a sentencepiece model, giving exactly tokenizer.json's ids.

Why: `tokenizers` builds XLM-R's 250,002-piece unigram vocabulary into a trie of ~285 MB (measured on
me5-small-r's tokenizer.json); the same pieces, scores and normalization table as a sentencepiece model load into
~75 MB and encode faster (2,048 benchmark-corpus texts: 150 ms one by one against tokenizers' 400 ms batched).
The export writes `tokenizer.model` only after checking that it gives the same ids as tokenizer.json on every probe
and benchmark text (export/compact_tokenizer.py), and the manifest records it.

Two rules of tokenizer.json that sentencepiece does not follow are applied here:
- its special tokens (`<s>`, `<mask>`, ...) are matched in the raw text, and the text between them is encoded on
  its own (with its own leading ▁): the text is split on them first;
- a text whose normalized form ends in a space keeps that space as a final `▁` piece (tokenizer.json collapses
  runs of spaces but strips none; sentencepiece strips leading and trailing ones; a leading one becomes the
  leading ▁ either way). Only where the record says `trailing_space`: transformers 5's pipeline, which the export
  writes by default, drops it as sentencepiece does.

And one it follows only for rare texts: tokenizers applies the normalization table per grapheme cluster, and where
a cluster's first character has an entry (a full-width letter, a ligature, a compatibility character) it keeps
that entry's output and drops the rest of the cluster (its combining marks); sentencepiece keeps them. A text with
a character of the table followed by one that can extend a cluster is encoded through tokenizer.json itself
(loaded on first need): exact, and rare in real text.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ManifestError
from .pieces import PieceTable

log = logging.getLogger("e5rt")
# Unicode's White_Space property (what tokenizers strips around an lstrip/rstrip special token).
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# transformers 5's layout splits the normalized text on these before Metaspace (WhitespaceSplit): the ones the
# normalization table leaves alone (U+0085, U+1680, U+2028, U+2029) separate words there, so they become spaces
# for sentencepiece.
_WHITE_SPACE_RUN = re.compile(f"[{_WHITE_SPACE}]")
FORMAT = "sentencepiece"


@dataclass(frozen=True)
class Special:
    """A special token of tokenizer.json matched in the raw text."""

    content: str
    id: int
    lstrip: bool = False
    rstrip: bool = False


@dataclass(frozen=True)
class CompactSpec:
    """The manifest's `compact_tokenizer` record."""

    path: str  # the sentencepiece model, relative to the model directory
    table: str  # the piece table (e5rt.core.pieces), relative to the model directory
    vocab_size: int
    space_id: int  # the lone "▁" piece
    specials: tuple[Special, ...]
    single: tuple[tuple[int, ...], tuple[int, ...]]  # ids before and after one text
    pair: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # before, between and after two texts
    # Code points the normalization table has an entry for, as inclusive (first, last) ranges
    mapped: tuple[tuple[int, int], ...] = ()
    # Whether a text whose normalized form ends in a space gets a final "▁" (tokenizer.json as the tokenizers
    # library runs it) or not (transformers 5's pipeline; sentencepiece's own rule). Records from before the
    # key existed were all the former.
    trailing_space: bool = True

    @classmethod
    def parse(cls, record: Any) -> CompactSpec:
        """The record as the manifest holds it; one ManifestError for anything malformed."""
        where = "manifest: 'compact_tokenizer'"
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ManifestError(f"{where} is not a {FORMAT} record; export the model again with this e5rt")
        for key in ("path", "table"):
            name = str(record.get(key, ""))
            if not name or Path(name).is_absolute() or ".." in Path(name).parts:
                raise ManifestError(f"{where}.{key} must name a file inside the model directory, got {name!r}")
        try:
            single = record["template"]["single"]
            pair = record["template"]["pair"]
            return cls(
                path=str(record["path"]),
                table=str(record["table"]),
                vocab_size=int(record["vocab_size"]),
                space_id=int(record["space_id"]),
                specials=tuple(
                    Special(str(s["content"]), int(s["id"]), bool(s["lstrip"]), bool(s["rstrip"]))
                    for s in record["specials"]
                ),
                single=(tuple(map(int, single[0])), tuple(map(int, single[1]))),
                pair=(tuple(map(int, pair[0])), tuple(map(int, pair[1])), tuple(map(int, pair[2]))),
                mapped=tuple((int(a), int(b)) for a, b in record["mapped"]),
                trailing_space=bool(record.get("trailing_space", True)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ManifestError(f"manifest: 'compact_tokenizer' is malformed ({exc}); export the model again") from None

    def as_record(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "path": self.path,
            "table": self.table,
            "vocab_size": self.vocab_size,
            "space_id": self.space_id,
            "specials": [
                {"content": s.content, "id": s.id, "lstrip": s.lstrip, "rstrip": s.rstrip} for s in self.specials
            ],
            "template": {"single": [list(x) for x in self.single], "pair": [list(x) for x in self.pair]},
            "mapped": [list(r) for r in self.mapped],
            "trailing_space": self.trailing_space,
        }


def available() -> bool:
    """Whether the sentencepiece package can be imported (the runtime falls back to tokenizers without it)."""
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        return False
    return True


class CompactEncoder:
    """Content ids (no template tokens, no truncation) of texts, as tokenizer.json would give them.

    Ready as soon as it is built: the piece table (e5rt.core.pieces) segments the first texts while the
    sentencepiece model loads on a thread of its own; a large batch waits for it instead."""

    # Characters up to which a call is segmented by the piece table while sentencepiece is still loading
    # (~1 ms per short query there; a batch past this waits for sentencepiece, ~100x faster per text).
    BRIDGE_CHARS = 2048

    def __init__(
        self,
        model_file: Path,
        table_file: Path,
        spec: CompactSpec,
        reference: Callable[[str], list[int]],
        keep_table: bool = False,
    ) -> None:
        """reference: tokenizer.json's content ids of one text, for the rare texts described in the module;
        keep_table: keep the piece table once sentencepiece is loaded (the export's check uses both)."""
        import sentencepiece as spm

        for path in (model_file, table_file):
            if not path.is_file():
                raise ManifestError(f"{path}: compact tokenizer file named by the manifest is missing")
        self._keep_table = keep_table
        self.table: PieceTable | None = PieceTable(table_file)
        if len(self.table.scores) != spec.vocab_size:
            raise ManifestError(f"{table_file}: {len(self.table.scores)} pieces, the manifest says {spec.vocab_size}")
        normalizer_spec = self.table.normalizer_spec
        try:  # built from the normalizer spec alone: no trie, no wait
            self._escape = spm.SentencePieceNormalizer(normalizer_spec=normalizer_spec)
            # The same table keeping every space: only used to see whether a text ends in one.
            self._norm = spm.SentencePieceNormalizer(
                normalizer_spec=normalizer_spec,
                add_dummy_prefix=False,
                escape_whitespaces=False,
                remove_extra_whitespaces=False,
            )
        except (OSError, RuntimeError) as exc:
            raise ManifestError(f"{table_file}: cannot read the normalizer ({exc}); export the model again") from exc
        self.spec = spec
        self._split, self._group_ids = _special_pattern(spec.specials)
        self._reference = reference
        self._clusters = _cluster_pattern(spec.mapped)
        self.by_reference = 0  # texts encoded through tokenizer.json (counted for tests and logs)
        self.by_table = 0  # texts segmented by the piece table while sentencepiece loaded
        self._sp: Any = None
        self._loaded: Future[Any] = Future()
        threading.Thread(target=self._load, args=(model_file,), name="e5rt-tokenizer-load", daemon=True).start()

    def _load(self, model_file: Path) -> None:
        import sentencepiece as spm

        try:
            sp = spm.SentencePieceProcessor(model_file=str(model_file))
            if sp.get_piece_size() != self.spec.vocab_size:
                raise ManifestError(
                    f"{model_file}: {sp.get_piece_size()} pieces, the manifest says {self.spec.vocab_size}"
                )
        except (OSError, RuntimeError, ManifestError) as exc:
            self._loaded.set_exception(ManifestError(f"{model_file}: cannot read the compact tokenizer ({exc})"))
            return
        self._sp = sp
        self._loaded.set_result(sp)
        if not self._keep_table:
            self.table = None  # its ~12 MB are not needed once sentencepiece segments

    def wait(self) -> None:
        """Until sentencepiece is loaded (its load error is raised here)."""
        self._loaded.result()

    def encode(self, texts: Iterable[str]) -> list[np.ndarray]:
        texts = list(texts)
        if self._sp is None and sum(map(len, texts)) > self.BRIDGE_CHARS:
            self.wait()
        return [np.asarray(self.encode_one(t), dtype=np.int64) for t in texts]

    def encode_one(self, text: str, by_table: bool = False) -> list[int]:
        """One text's ids; by_table: through the piece table even once sentencepiece is loaded (checks)."""
        if self._clusters is not None and _cluster_starts_mapped(self._clusters, text):
            if not self.by_reference:
                log.info("e5rt: a combining sequence after a normalized character; tokenizer.json encodes such texts")
            self.by_reference += 1
            return self._reference(text)
        if self._split is None:
            return self._plain(text, by_table)
        out: list[int] = []
        pos = 0
        for match in self._split.finditer(text):
            out += self._plain(text[pos : match.start()], by_table)
            out.append(self._group_ids[match.lastindex or 0])
            pos = match.end()
        return out + self._plain(text[pos:], by_table)

    def _plain(self, text: str, by_table: bool) -> list[int]:
        if not text:
            return []
        if not self.spec.trailing_space:  # split where WhitespaceSplit splits: in the normalized text
            text = _WHITE_SPACE_RUN.sub(" ", self._norm.normalize(text))
        sp, table = self._sp, self.table
        if sp is not None and not (by_table and table is not None):
            ids: list[int] = sp.encode(text)
        else:
            assert table is not None  # released only after sentencepiece is set
            self.by_table += 1
            ids = table.segment(self._escape.normalize(text))
        if self.spec.trailing_space and self._norm.normalize(text).endswith(" "):
            ids.append(self.spec.space_id)
        return ids


def _special_pattern(specials: tuple[Special, ...]) -> tuple[re.Pattern[str] | None, dict[int, int]]:
    """One alternation of the special tokens, longest first (tokenizers matches leftmost-longest), each with the
    whitespace it strips on its left or right, and the id of each alternative's group (match.lastindex)."""
    if not specials:
        return None, {}
    ws = f"[{_WHITE_SPACE}]*"
    ordered = sorted(specials, key=lambda s: len(s.content), reverse=True)
    parts = [(ws if s.lstrip else "") + "(" + re.escape(s.content) + ")" + (ws if s.rstrip else "") for s in ordered]
    return re.compile("|".join(parts)), {i: s.id for i, s in enumerate(ordered, 1)}


# Characters that can continue a grapheme cluster (a superset: Extend, SpacingMark, ZWJ, Hangul vowel and final
# jamo, regional indicators, emoji modifiers, tags), and those that start one with whatever follows (Prepend,
# Hangul initial jamo). CR LF is a cluster too, but a space-mapped CR followed by LF normalizes to the same
# collapsed space either way (the export's check has such texts).
_EXTEND_CATEGORIES = ("Mn", "Mc", "Me")
_EXTEND_RANGES = (
    (0x200C, 0x200D), (0x0E33, 0x0E33), (0x0EB3, 0x0EB3), (0x1160, 0x11FF), (0xD7B0, 0xD7FF),
    (0x1F1E6, 0x1F1FF), (0x1F3FB, 0x1F3FF), (0xE0020, 0xE007F),
)  # fmt: skip
_PREPEND_RANGES = (
    (0x0600, 0x0605), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x0D4E, 0x0D4E),
    (0x1100, 0x115F), (0xA960, 0xA97F), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x111C2, 0x111C3),
    (0x1193F, 0x1193F), (0x11941, 0x11941), (0x11A3A, 0x11A3A), (0x11A84, 0x11A89), (0x11D46, 0x11D46),
    (0x11F02, 0x11F02),
)  # fmt: skip


def _char_class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)


def _intersect(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    return [(max(x, y), min(x2, y2)) for x, x2 in a for y, y2 in b if max(x, y) <= min(x2, y2)]


def _cluster_pattern(mapped: tuple[tuple[int, int], ...]) -> re.Pattern[str] | None:
    """Where a cluster may start with a mapped character: a mapped one before a non-ASCII one (confirmed by
    _cluster_starts_mapped), or a mapped Prepend / initial jamo before anything."""
    if not mapped:
        return None
    prepend = _intersect(mapped, _PREPEND_RANGES)
    first = f"[{_char_class(mapped)}](?=[^\x00-\x7f])"
    return re.compile(first + (f"|[{_char_class(prepend)}](?=.)" if prepend else ""), re.DOTALL)


def _extends(ch: str) -> bool:
    code = ord(ch)
    return unicodedata.category(ch) in _EXTEND_CATEGORIES or any(a <= code <= b for a, b in _EXTEND_RANGES)


def _cluster_starts_mapped(pattern: re.Pattern[str], text: str) -> bool:
    for match in pattern.finditer(text):
        nxt = text[match.end() : match.end() + 1]
        if not nxt or _extends(nxt) or any(a <= ord(text[match.start()]) <= b for a, b in _PREPEND_RANGES):
            return True
    return False


# One encoder per compact tokenizer file, shared by every model that has it.
_ENCODERS: dict[tuple[str, int, int], CompactEncoder] = {}
_LOCK = threading.Lock()


def shared_encoder(model_dir: Path, spec: CompactSpec, reference: Callable[[str], list[int]]) -> CompactEncoder:
    """The encoder of a model directory's compact tokenizer, built once per process per file."""
    model_file, table_file = model_dir / spec.path, model_dir / spec.table
    try:
        st = model_file.stat()
    except OSError as exc:
        raise ManifestError(f"{model_file}: compact tokenizer named by the manifest is missing") from exc
    key = (str(model_file.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = _ENCODERS[key] = CompactEncoder(model_file, table_file, spec, reference)
        return encoder
