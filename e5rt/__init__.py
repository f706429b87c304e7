"""e5rt: a lean ONNX Runtime engine for E5 text embeddings.

from e5rt import Embedder
emb = Embedder.load("models/me5-small-r")
vecs = emb.encode_passages(["..."]); q = emb.encode_queries("...", task="web_search")
"""

from .embedder import Embedder, Stats
from .errors import (
    E5rtError,
    InputError,
    IntegrityError,
    ManifestError,
    ProviderUnavailableError,
    VariantError,
)
from .ops import search, similarity
from .prompts import TASKS

__version__ = "0.1.0"
__all__ = [
    "TASKS",
    "E5rtError",
    "Embedder",
    "InputError",
    "IntegrityError",
    "ManifestError",
    "ProviderUnavailableError",
    "Stats",
    "VariantError",
    "search",
    "similarity",
]
