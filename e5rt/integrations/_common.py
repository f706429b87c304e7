"""What the integration classes share: how they call Embedder.encode (passages, or queries with the task
prompt; long texts truncated or chunked), and the error for a framework that is not installed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core.prompts import TextKind, resolve_task
from ..engine import Embedder, LongText
from ..errors import InvalidInputError, MissingExtraError


def missing(package: str, extra: str, exc: ImportError) -> MissingExtraError:
    """The error raised when an integration's framework cannot be imported."""
    return MissingExtraError(f"this integration needs {package}: pip install 'e5rt[{extra}]' ({exc})")


@dataclass(frozen=True)
class Prompting:
    """The encode settings of an integration class, checked when the class is built, not at the first call."""

    task: str | None = None  # instruct models' query instruction: a name from e5rt.TASKS or free text
    long_text: LongText = "truncate"
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.task is not None:
            resolve_task(self.task)
        if self.long_text not in ("truncate", "chunk"):
            raise InvalidInputError(f"long_text must be 'truncate' or 'chunk', got {self.long_text!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or self.overlap < 0:
            raise InvalidInputError(f"overlap must be an integer >= 0, got {self.overlap!r}")

    def passages(self, embedder: Embedder, texts: Sequence[str]) -> list[list[float]]:
        return self._encode(embedder, texts, query=False)

    def queries(self, embedder: Embedder, texts: Sequence[str]) -> list[list[float]]:
        return self._encode(embedder, texts, query=True)

    def _encode(self, embedder: Embedder, texts: Sequence[str], query: bool) -> list[list[float]]:
        if not texts:
            return []
        kind: TextKind = "query" if query else "passage"
        task = self.task if query else None
        vectors = embedder.encode(list(texts), kind, task, long_text=self.long_text, overlap=self.overlap)
        return [v.tolist() for v in vectors]


def check_top_n(value: int | None, name: str = "top_n") -> int | None:
    """A reranking integration's cut: a positive integer, or None for every document."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidInputError(f"{name} must be a positive integer or None, got {value!r}")
    return value
