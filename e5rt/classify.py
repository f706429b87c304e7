"""Classifier: texts or (text, text) pairs → label scores, from a sequence-classification model directory.

The third task on the model base (e5rt.model), beside the embedder and the reranker: its input shaping (single
texts through the tokenizer, pairs through the model's pair template, both cut to max length from the end) and
its output (the graph's logits through the manifest's activation: softmax for a single-label classifier, sigmoid
for a multi-label one, with the checkpoint's label names) are all it adds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .core.activations import activate, ranked
from .errors import InputError, InvalidInputError, TooLongError
from .manifest import ModelKind
from .model import ModelBase, ModelSpec, Prepared, check_truncation, fake_tokenizer, finish_rows

_HINT = "shorten it or send truncate=true"


@dataclass(frozen=True)
class Prediction:
    """One label's score for one input."""

    label: str
    score: float


def check_inputs(inputs: Any) -> tuple[list[str | tuple[str, str]], bool]:
    """Inputs as a list of texts and pairs, and whether one input was given (not a list of them).

    A str is one text and a tuple of two str one pair; a list is a list of inputs, each a str, a one-element
    [text] or a two-element [first, second]. (TEI's /predict reads a list of exactly two strings as one pair;
    the server's parser turns that into a tuple before it gets here.)"""
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs):
        return [(inputs[0], inputs[1])], True
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
        raise InputError(
            f"inputs must be a text, a (text, text) pair, or a list of those; got {type(inputs).__name__}",
            param="inputs",
        )
    out: list[str | tuple[str, str]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (list, tuple)) and 1 <= len(item) <= 2 and all(isinstance(x, str) for x in item):
            out.append(item[0] if len(item) == 1 else (item[0], item[1]))
        else:
            raise InputError(
                f"inputs[{i}] must be a text, [text] or a [text, text] pair, got {type(item).__name__}",
                param="inputs",
            )
    return out, False


class Classifier(ModelBase):
    """Label scores of texts or text pairs from an e5rt classify model directory. Thread-safe.

    Build one with Classifier.load(model_dir, ...) (the same options as Embedder.load)."""

    kind: ClassVar[ModelKind] = ModelKind.CLASSIFY

    def __init__(self, *args: Any, labels: Sequence[str] | None = None, activation: str | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.pairs = self.tokenizer.pairs()
        m = self.manifest
        self.labels = (
            list(labels) if labels is not None else (m.labels if m else [f"LABEL_{i}" for i in range(self.dim)])
        )
        self.activation = activation or (m.activation if m is not None else "softmax")

    @classmethod
    def fake(
        cls, labels: Sequence[str] = ("negative", "positive"), multi_label: bool = False, max_length: int = 128
    ) -> Classifier:
        """A deterministic classifier without model files (FakeBackend giving logits + a byte-level tokenizer):
        for serving tests. Its scores are reproducible and batch-invariant, and mean nothing."""
        from .backends.fake import FAKE_PAD_ID, FAKE_VOCAB, FakeBackend

        folder, tok = fake_tokenizer(max_length)
        backend = FakeBackend(dim=max(32, len(labels)), vocab_size=FAKE_VOCAB, logits=len(labels))
        spec = ModelSpec(
            dim=len(labels), pad_token_id=FAKE_PAD_ID, max_length=max_length, pooling="logits", name="fake-classify"
        )
        activation = "sigmoid" if multi_label else "softmax"
        model = cls(backend, tok, spec, None, provider="cpu", variant="fake", labels=labels, activation=activation)
        model._keep = folder
        return model

    # --- public API -------------------------------------------------------------------------------------
    def predict(
        self, inputs: Any, raw_scores: bool = False, truncate: bool = True, top_k: int | None = None
    ) -> list[Prediction] | list[list[Prediction]]:
        """Every label's score for one input (a text or a [text, text] pair), best first; for a list of inputs,
        one such list each. Scores are the manifest's activation of the logits (softmax, or sigmoid for a
        multi-label model); raw_scores=True gives the logits. top_k keeps the k best labels."""
        return self.run(self.prepare(inputs, raw_scores, truncate, top_k))[0]

    def scores(self, inputs: Any, raw_scores: bool = False, truncate: bool = True) -> np.ndarray:
        """(N, labels) scores in label order (self.labels), one row per input of a list (or (labels,) for one)."""
        items, single = check_inputs(inputs)
        work = self._encode(items, truncate)
        activation = "none" if raw_scores else self.activation

        def rows(logits: np.ndarray, _: np.ndarray) -> np.ndarray:
            out = activate(logits, activation)
            return out[0] if single else out

        return self.run(work.with_finish(finish_rows(rows)))[0]

    # --- the request, shaped once for the library and the server ---------------------------------------------
    def prepare(
        self, inputs: Any, raw_scores: bool = False, truncate: bool = True, top_k: int | None = None
    ) -> Prepared[list[Prediction] | list[list[Prediction]]]:
        """A predict request as token ids, and the finish step that scores, names and orders the labels."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a positive integer or None, got {top_k!r}", param="top_k")
        items, single = check_inputs(inputs)
        work = self._encode(items, truncate)
        activation = "none" if raw_scores else self.activation
        labels = self.labels

        def predictions(logits: np.ndarray, _: np.ndarray) -> list[Prediction] | list[list[Prediction]]:
            scores = activate(logits, activation)
            out = [[Prediction(labels[j], float(row[j])) for j in ranked(row, top_k)] for row in scores]
            return out[0] if single else out

        return work.with_finish(finish_rows(predictions))

    def warmup(self) -> Prepared[Any]:
        return self._encode(["warm-up"], True)

    # --- internals --------------------------------------------------------------------------------------
    def _encode(self, items: list[str | tuple[str, str]], truncate: bool) -> Prepared[np.ndarray]:
        """Texts through the tokenizer, pairs through the pair template, in input order (finishing as logits)."""
        t0 = time.perf_counter()
        singles = [i for i, x in enumerate(items) if isinstance(x, str)]
        pairs = [i for i, x in enumerate(items) if not isinstance(x, str)]
        ids: list[np.ndarray] = [np.zeros(0, np.int64)] * len(items)
        truncated = 0
        if singles:
            enc = self.tokenizer.encode([str(items[i]) for i in singles])
            check_truncation(enc, truncate, self.spec.max_length, "input", "inputs", _HINT, singles)
            for i, row in zip(singles, enc.ids, strict=True):
                ids[i] = row
            truncated += enc.truncated
        if pairs:
            firsts = [items[i][0] for i in pairs]
            seconds = [items[i][1] for i in pairs]
            try:
                enc = self.pairs.encode(firsts, seconds)
            except TooLongError as exc:  # the first text alone leaves no room for the second
                raise TooLongError(str(exc), param="inputs") from None
            check_truncation(enc, truncate, self.spec.max_length, "input", "inputs", _HINT, pairs)
            for i, row in zip(pairs, enc.ids, strict=True):
                ids[i] = row
            truncated += enc.truncated
        return Prepared(
            ids, finish_rows(lambda rows, _: rows), truncated=truncated, tokenize_s=time.perf_counter() - t0
        )
