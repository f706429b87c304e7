"""A deterministic backend without model files, for queue, server and CLI tests.

Each token's hidden state is a fixed pseudo-random vector of its id, mixed with its position, so mean pooling
gives every text its own embedding, identical alone or inside any batch. Nothing else about it is a model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


class FakeBackend:
    def __init__(
        self,
        dim: int = 32,
        vocab_size: int = 260,
        seed: int = 0,
        delay_s: float = 0.0,
        per_token_s: float = 0.0,
        fail_on_token: int | None = None,
        logits: int | None = None,
    ) -> None:
        """logits: give (batch, logits) rows, as a cross-encoder's graph does (a reranker's or a classifier's
        fake), from the mean of the positions' vectors; otherwise (batch, width, dim) hidden states."""
        rng = np.random.default_rng(seed)
        self.table = rng.standard_normal((vocab_size, dim)).astype(np.float32)
        self.positions = rng.standard_normal((4096, dim)).astype(np.float32) * 0.1
        self.input_names: tuple[str, ...] = ("input_ids", "attention_mask")
        self.input_types: dict[str, Any] = {"input_ids": np.int64, "attention_mask": np.int64}
        self.active_providers: tuple[str, ...] = ("FakeExecutionProvider",)
        self.device = "cpu"
        self.threads: int | None = 1
        self.can_split = False  # one fake session: the queue runs one batch at a time on it
        self.logits = logits
        self.delay_s = delay_s
        self.per_token_s = per_token_s
        self.fail_on_token = fail_on_token
        self.calls = 0
        self.shapes: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids = feeds["input_ids"]
        with self._lock:
            self.calls += 1
            self.shapes.append(ids.shape)
        if self.fail_on_token is not None and (ids == self.fail_on_token).any():
            raise RuntimeError(f"fake backend: token {self.fail_on_token} fails on purpose")
        if self.delay_s or self.per_token_s:
            # Simulated compute: the cost grows with the padded batch, as on a real device.
            time.sleep(self.delay_s + self.per_token_s * ids.size)
        width = ids.shape[1]
        hidden: np.ndarray = self.table[ids % len(self.table)] + self.positions[:width][None, :, :]
        if self.logits is None:
            return hidden
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        mean = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
        return np.ascontiguousarray(mean[:, : self.logits] * 2.0)

    def with_threads(self, threads: int) -> FakeBackend:
        raise NotImplementedError("the fake backend runs one session")


def write_fake_tokenizer(path: str | Path) -> Path:
    """A byte-level tokenizer.json (one token per UTF-8 byte, <s> … </s> around each text) to pair with
    FakeBackend: distinct texts get distinct ids, and no model files are needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    out = Path(path)
    tok.save(str(out))
    return out


FAKE_VOCAB = 4 + 256
FAKE_PAD_ID = 1
