"""e5rt: a lean ONNX Runtime engine for E5 text embeddings.

from e5rt import Embedder
emb = Embedder.load("models/me5-small-r")
vecs = emb.encode_passages(["..."]); q = emb.encode_queries("...", task="web_search")
res = emb.embed(["..."])  # res.embeddings, res.stats: this call's own figures

from e5rt import Reranker
rr = Reranker.load("models/reranker")
best = rr.rerank("query", ["doc a", "doc b"], top_n=1)  # [RerankResult(index, score, document)]

from e5rt import Classifier
clf = Classifier.load("models/classifier")
clf.predict("text")  # [Prediction(label, score)], best first; a list of inputs gives one list each

Every error class lives in e5rt.errors (all derive from E5rtError); the stages in e5rt.core.
"""

from .classify import Classifier, Prediction
from .config import BatchOptions, LoadOptions
from .core.prompts import TASKS
from .core.types import EmbedResult, Stats
from .engine import Embedder
from .errors import E5rtError, InputError
from .ops import search, similarity
from .rerank import Reranker, RerankResult

__version__ = "0.2.0"
__all__ = [
    "TASKS",
    "BatchOptions",
    "Classifier",
    "E5rtError",
    "EmbedResult",
    "Embedder",
    "InputError",
    "LoadOptions",
    "Prediction",
    "RerankResult",
    "Reranker",
    "Stats",
    "search",
    "similarity",
]
