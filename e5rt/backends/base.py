"""The contract every backend meets: run one padded batch, return its output (hidden states or logits) on the host,
and say what the serving queue needs to split the work between sessions."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """input_names / input_types are the graph's declared inputs; run() gets exactly those, typed so, and
    returns (batch, width, hidden) hidden states. run() must be safe to call from several threads."""

    input_names: tuple[str, ...]
    input_types: dict[str, Any]
    active_providers: tuple[str, ...]
    device: str  # "cpu" or "cuda"
    threads: int | None  # intra-op threads of this session (None: the library's default, every core)
    can_split: bool  # with_threads() works: the queue may run batches side by side on sessions of fewer threads

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...

    def with_threads(self, threads: int) -> Backend:
        """Another session of the same weights on `threads` intra-op threads (only where can_split)."""
        ...
