"""Result and statistics types shared by the engine, the batching queue and the interfaces."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Stats:
    """What one call cost. Padded tokens count the rows of this call only, also in batches shared with others."""

    texts: int
    tokens: int
    padded_tokens: int
    padding_efficiency: float
    batches: int
    truncated: int
    chunks: int = 0
    tokenize_ms: float = 0.0
    queue_ms: float = 0.0  # from submission until this call's first batch started
    inference_ms: float = 0.0  # wall time of the batches that held this call's rows
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


EMPTY_STATS = Stats(0, 0, 0, 1.0, 0, 0)


@dataclass(frozen=True)
class EmbedResult:
    """Embeddings in input order, (N, dim) float32, with the stats of the call that made them."""

    embeddings: np.ndarray
    stats: Stats
