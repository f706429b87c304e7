"""The compact tokenizer's first seconds: the unigram segmentation in Python over a piece table that loads at once.

sentencepiece builds its piece trie when it loads a model: 1.2 s for XLM-R's 250,002 pieces on a 2-core Zen 1,
most of a process's time to its first vector. The export also writes the pieces as a table (tokenizer.pieces.npz:
a sorted hash of each piece, its id, score and characters, and the normalizer spec), which numpy reads in
milliseconds. Until the sentencepiece model is loaded (on a thread of its own), texts are segmented here with
sentencepiece's own rule, so the ids are the same:

- the text is normalized by sentencepiece's normalizer (built from the spec alone: no trie), giving the string
  with "▁" for spaces that sentencepiece segments;
- Viterbi over characters: at each character position, every piece that starts there (looked up by a hash
  of each substring of up to the longest piece's length, confirmed against the piece's characters) extends the
  best path to its end if it scores strictly more (float32 sums, as sentencepiece keeps them); where no
  one-character piece exists, the unknown piece does with the lowest piece score minus 10;
- the best path is read back, and runs of unknown pieces become one.

It costs ~1 ms for a short query in Python, against ~12 us in sentencepiece: a bridge for the first texts, not a
replacement (e5rt.core.compact waits for sentencepiece for a large batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ManifestError

_MASK = (1 << 64) - 1
_BASE = 0x100000001B3  # the hash's multiplier (odd, so invertible modulo 2**64; FNV's 64-bit prime)
_BASE_INV = pow(_BASE, -1, 1 << 64)
_UNK_PENALTY = np.float32(10.0)  # sentencepiece's kUnkPenalty
FILE_NAME = "tokenizer.pieces.npz"


def piece_hash(piece: str) -> int:
    """sum of (code + 1) * BASE**t over the piece's characters, modulo 2**64."""
    h, power = 0, 1
    for ch in piece:
        h = (h + (ord(ch) + 1) * power) & _MASK
        power = (power * _BASE) & _MASK
    return h


def substring_hashes(codes: np.ndarray, max_len: int) -> list[np.ndarray]:
    """hashes[k][i] = piece_hash of the characters codes[i : i + k + 1], for every k < max_len, vectorized:
    prefix sums of (code + 1) * BASE**t, each window's difference scaled back by BASE**-i (uint64 arithmetic
    wraps modulo 2**64, as the hash is defined)."""
    n = len(codes)
    with np.errstate(over="ignore"):
        powers = np.concatenate([[np.uint64(1)], np.cumprod(np.full(max(n - 1, 0), _BASE, dtype=np.uint64))])[:n]
        inverse = np.concatenate([[np.uint64(1)], np.cumprod(np.full(max(n - 1, 0), _BASE_INV, dtype=np.uint64))])[:n]
        prefix = np.concatenate([[np.uint64(0)], np.cumsum((codes.astype(np.uint64) + np.uint64(1)) * powers)])
        return [(prefix[k + 1 :] - prefix[: n - k]) * inverse[: n - k] for k in range(min(max_len, n))]


class PieceTable:
    """Unigram segmentation of normalized text with sentencepiece's tie-breaking, from tokenizer.pieces.npz."""

    def __init__(self, path: Path) -> None:
        try:
            with np.load(path) as data:
                self.hashes = data["hashes"]  # sorted, one per segmentable piece
                self.ids = data["ids"]  # the piece id of each hash
                self.scores = data["scores"].astype(np.float32)  # by piece id
                self.starts = data["starts"]  # by piece id: where its characters start in chars
                self.chars = data["chars"]
                self.max_len = int(data["max_len"])
                self.unk_id = int(data["unk_id"])
                self.normalizer_spec = data["normalizer_spec"].tobytes()
        except (OSError, KeyError, ValueError) as exc:
            raise ManifestError(f"{path}: cannot read the piece table ({exc}); export the model again") from exc
        self.unk_score = np.float32(self.scores[self.ids].min()) - _UNK_PENALTY

    def segment(self, normalized: str) -> list[int]:
        """Piece ids of a normalized string (sentencepiece's Viterbi: see the module's docstring)."""
        if not normalized:
            return []
        codes = np.frombuffer(normalized.encode("utf-32-le"), dtype=np.uint32)
        n = len(codes)
        found: list[list[tuple[int, int]]] = [[] for _ in range(n)]  # per start: (length, id), shortest first
        for k, hashes in enumerate(substring_hashes(codes, self.max_len)):
            where = np.searchsorted(self.hashes, hashes)
            where[where == len(self.hashes)] = 0
            for at in np.flatnonzero(self.hashes[where] == hashes).tolist():
                pid = int(self.ids[where[at]])
                piece = self.chars[self.starts[pid] : self.starts[pid + 1]]
                if len(piece) == k + 1 and np.array_equal(piece, codes[at : at + k + 1]):
                    found[at].append((k + 1, pid))
        best = [np.float32(0.0)] * (n + 1)
        back: list[tuple[int, int] | None] = [None] * (n + 1)  # (start, id) of the best path ending here
        for start in range(n):
            here = best[start]
            single = False
            for length, pid in found[start]:
                score = np.float32(self.scores[pid] + here)
                end = start + length
                if back[end] is None or score > best[end]:
                    best[end], back[end] = score, (start, pid)
                single = single or length == 1
            if not single:
                score = np.float32(self.unk_score + here)
                if back[start + 1] is None or score > best[start + 1]:
                    best[start + 1], back[start + 1] = score, (start, self.unk_id)
        ids: list[int] = []
        end = n
        while end > 0:
            step = back[end]
            assert step is not None  # every position is reached: at worst by the unknown piece
            end, pid = step
            if not (pid == self.unk_id and ids and ids[-1] == self.unk_id):  # a run of unknowns is one
                ids.append(pid)
        return ids[::-1]


def write_table(path: Path, pieces: list[tuple[str, float, bool]], unk_id: int, normalizer_spec: bytes) -> None:
    """tokenizer.pieces.npz for (piece, score, segmentable) in id order: segmentable pieces are the ones
    sentencepiece's trie holds (normal ones; not control or unknown)."""
    chars = [np.frombuffer(p.encode("utf-32-le"), dtype=np.uint32) for p, _, _ in pieces]
    starts = np.zeros(len(pieces) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([len(c) for c in chars])
    usable = [i for i, (_, _, ok) in enumerate(pieces) if ok]
    hashes = np.array([piece_hash(pieces[i][0]) for i in usable], dtype=np.uint64)
    order = np.argsort(hashes, kind="stable")
    arrays: dict[str, Any] = {
        "hashes": hashes[order],
        "ids": np.asarray(usable, dtype=np.int32)[order],
        "scores": np.asarray([s for _, s, _ in pieces], dtype=np.float32),
        "starts": starts,
        "chars": np.concatenate(chars) if chars else np.zeros(0, np.uint32),
        "max_len": np.int64(max(len(pieces[i][0]) for i in usable)),
        "unk_id": np.int64(unk_id),
        "normalizer_spec": np.frombuffer(normalizer_spec, dtype=np.uint8),
    }
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
