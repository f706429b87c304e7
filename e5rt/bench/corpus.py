"""The benchmark corpus and the one seeded subsample every benchmark takes of it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

# 2,048 seeded multilingual texts (regenerate with benchmarks/corpus.py); ships with the package.
DEFAULT_CORPUS = Path(__file__).resolve().parent / "data" / "corpus.jsonl"
T = TypeVar("T")


def subsample(items: Sequence[T], size: int | None, seed: int = 0) -> list[T]:
    """A seeded subsample of size items, kept in corpus order (all of them when size is None or larger)."""
    if size is None or size >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    return [items[i] for i in sorted(rng.choice(len(items), size=size, replace=False))]


def read_rows(path: Path = DEFAULT_CORPUS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def load_corpus(path: Path = DEFAULT_CORPUS, limit: int | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    """Bulk texts and single-call latency texts (the corpus's queries), optionally a seeded subsample."""
    rows = subsample(read_rows(path), limit, seed)
    queries = [r["text"] for r in rows if r.get("kind") == "query"] or [r["text"] for r in rows]
    return [r["text"] for r in rows], queries
