"""The contract every backend meets: run one padded batch, return its last hidden states on the host."""

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

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...
