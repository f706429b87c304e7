"""Corpus embedding: stream a file of any size through an Embedder into Parquet, .npy shards or jsonl,
committed chunk by chunk and resumable (`embed_corpus`). The Ray Data path for many machines is `e5rt.ray`."""

from .job import CorpusError, CorpusOptions, Output, Summary, embed_corpus
from .source import Record, Reject, Source, SourceError

__all__ = [
    "CorpusError",
    "CorpusOptions",
    "Output",
    "Record",
    "Reject",
    "Source",
    "SourceError",
    "Summary",
    "embed_corpus",
]
