"""What the integration classes share: the error for a framework that is not installed, and the prompt
arguments every class takes."""

from __future__ import annotations

from ..errors import MissingExtraError


def missing(package: str, extra: str, exc: ImportError) -> MissingExtraError:
    """The error raised when an integration's framework cannot be imported."""
    return MissingExtraError(f"this integration needs {package}: pip install 'e5rt[{extra}]' ({exc})")
