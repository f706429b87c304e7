"""The pure stages of the pipeline, on numpy, tokenizers and sentencepiece only (never onnxruntime):
prompts → tokenize → plan → feeds → pool (or a scoring head's activation), and the result types they produce."""

from . import pieces
from .activations import activate, ranked, sigmoid, softmax
from .compact import CompactEncoder, CompactSpec, Special
from .feeds import build_feeds
from .plan import Batch, CostRule, padded_length, plan, plan_batches
from .pool import cls_pool, divide, l2_normalize, mean_pool, pool_sum, vectors_from_sums
from .prompts import DEFAULT_TASK, TASKS, TextKind, format_texts, resolve_task
from .quantize import PRECISIONS, Calibration, calibrate, quantize
from .tokenize import Encoded, PairTokenizer, TextTokenizer
from .types import EMPTY_STATS, EmbedResult, Stats

__all__ = [
    "DEFAULT_TASK",
    "PRECISIONS",
    "Calibration",
    "EMPTY_STATS",
    "TASKS",
    "Batch",
    "CompactEncoder",
    "CompactSpec",
    "Special",
    "CostRule",
    "EmbedResult",
    "Encoded",
    "TextKind",
    "Stats",
    "PairTokenizer",
    "TextTokenizer",
    "activate",
    "build_feeds",
    "calibrate",
    "cls_pool",
    "divide",
    "vectors_from_sums",
    "format_texts",
    "l2_normalize",
    "mean_pool",
    "padded_length",
    "plan",
    "plan_batches",
    "pieces",
    "pool_sum",
    "quantize",
    "ranked",
    "resolve_task",
    "sigmoid",
    "softmax",
]
