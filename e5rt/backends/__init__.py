"""Backends behind one contract (Backend): ONNX Runtime for real work, a deterministic fake for tests.

OrtBackend is imported on first use, so importing the contract does not load onnxruntime.
"""

from __future__ import annotations

from typing import Any

from .base import Backend
from .fake import FakeBackend

__all__ = ["Backend", "FakeBackend", "OrtBackend", "resolve_provider", "installed_ort_packages"]


def __getattr__(name: str) -> Any:
    if name in ("OrtBackend", "resolve_provider", "installed_ort_packages", "PROVIDERS", "ARENA_POLICIES"):
        from . import ort

        return getattr(ort, name)
    raise AttributeError(f"module 'e5rt.backends' has no attribute {name!r}")
