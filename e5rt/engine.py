"""Embedder: prompts → tokenize → schedule batches → run → pool → normalize → restore order.

The embedding task on the model base (e5rt.model): prepare() turns texts or token ids into a Prepared request,
the base runs it inline (encode, embed) or a server queues it, and its finish step pools, normalizes and cuts the
vectors. embed() returns each call's own stats, so concurrent callers never see each other's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from .batching import Progress, Submission
from .config import BatchOptions
from .core.pool import cut_dimensions, vectors_from_sums
from .core.prompts import TextKind, format_texts
from .core.quantize import CALIBRATED, Calibration, calibrate, check_precision, quantize, uncalibrated
from .core.tokenize import Direction, Encoded, TextTokenizer
from .core.types import EmbedResult, Stats
from .errors import InputError, InvalidInputError
from .manifest import ModelKind
from .model import ModelBase, ModelSpec, Prepared, check_texts, check_truncation, fake_tokenizer, finish_rows

LongText = Literal["truncate", "chunk"]
__all__ = ["Embedder", "LongText", "ModelSpec", "Windows"]


def pick_instruction(instruction: str | None, task: str | None) -> str | None:
    """The E5 instruction, given as instruction= or by its older name task= (not both)."""
    if task is not None and instruction is not None and task != instruction:
        raise InvalidInputError("give the instruction once: instruction= (task= is its older name)", param="task")
    return instruction if instruction is not None else task


class Embedder(ModelBase):
    """Text embeddings from an e5rt model directory. Thread-safe: encode()/embed() may be called concurrently.

    Build one with Embedder.load(model_dir, ...); the constructor takes any Backend (tests use FakeBackend).
    """

    kind: ClassVar[ModelKind] = ModelKind.EMBED

    @classmethod
    def from_onnx(
        cls,
        model_path: str | Path,
        tokenizer_path: str | Path,
        spec: ModelSpec,
        *,
        provider: str = "cpu",
        batching: BatchOptions | None = None,
        threads: int | None = None,
        check_finite: bool = False,
        exact_int8: bool = False,
    ) -> Embedder:
        """The pipeline on one ONNX file without a manifest (the export stage validates graphs this way)."""
        from .backends.ort import OrtBackend

        backend = OrtBackend(model_path, provider, threads=threads, exact_int8=exact_int8)
        tok = TextTokenizer(tokenizer_path, spec.max_length)
        return cls(backend, tok, spec, batching, provider=provider, check_finite=check_finite)

    @classmethod
    def fake(
        cls,
        dim: int = 32,
        max_length: int = 128,
        prompt_scheme: str = "query-passage",
        batching: BatchOptions | None = None,
        delay_s: float = 0.0,
        per_token_s: float = 0.0,
    ) -> Embedder:
        """A deterministic Embedder without model files (FakeBackend + a byte-level tokenizer): for tests of
        servers, queues and CLIs. Its vectors are reproducible and batch-invariant, and mean nothing."""
        from .backends.fake import FAKE_PAD_ID, FAKE_VOCAB, FakeBackend

        folder, tok = fake_tokenizer(max_length)
        backend = FakeBackend(dim=dim, vocab_size=FAKE_VOCAB, delay_s=delay_s, per_token_s=per_token_s)
        spec = ModelSpec(
            dim=dim, pad_token_id=FAKE_PAD_ID, max_length=max_length, prompt_scheme=prompt_scheme, name="fake"
        )
        emb = cls(backend, tok, spec, batching, provider="cpu", variant="fake")
        emb._keep = folder  # the tokenizer file lives as long as the embedder
        # An output calibration measured as an export does (on its own vectors), so int8 / binary output works
        texts = [f"calibration text {i}: {' '.join(str(i * k % 97) for k in range(1 + i % 9))}" for i in range(256)]
        backend.delay_s, backend.per_token_s = 0.0, 0.0  # not the simulated compute time: this is setup
        emb._calibration = calibrate(emb.encode(texts), len(texts), "fake: 256 generated texts")
        backend.delay_s, backend.per_token_s = delay_s, per_token_s
        return emb

    def with_batching(self, batching: BatchOptions) -> Embedder:
        """The same loaded model and session with other batching options (no reload)."""
        other = Embedder(
            self.backend,
            self.tokenizer,
            self.spec,
            batching,
            provider=self.provider,
            manifest=self.manifest,
            variant=self._variant,
            model_dir=self.model_dir,
            check_finite=self.pool_spec.check_finite,
        )
        other._calibration = self._calibration
        return other

    # --- public encode API ------------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        kind: TextKind = "passage",
        instruction: str | None = None,
        normalize: bool = True,
        long_text: LongText = "truncate",
        overlap: int = 0,
        progress: Progress | None = None,
        prompt: str | None = None,
        *,
        task: str | None = None,
        dimensions: int | None = None,
        precision: str = "float32",
    ) -> np.ndarray:
        """Embed texts as (N, dim) float32 in input order; a single str gives (dim,).

        instruction: the E5 instruction of an instruct model's queries (a name from e5rt.TASKS or free text;
        task= is its older name). long_text='chunk' embeds texts longer than max_length as windows and averages
        them by token count. prompt, when given, is put before every text instead of the model's own prompts
        ("" embeds the texts as they are). dimensions keeps the first N values (re-normalized). precision: int8 /
        uint8 (N, dim) or binary / ubinary (N, dim/8) packed bits, by the model's calibration (see quantize).
        """
        result = self.embed(
            texts,
            kind,
            instruction,
            normalize,
            long_text,
            overlap,
            progress,
            prompt,
            task=task,
            dimensions=dimensions,
            precision=precision,
        )
        return result.embeddings[0] if isinstance(texts, str) else result.embeddings

    def encode_queries(self, queries: str | Sequence[str], instruction: str | None = None, **kw: Any) -> np.ndarray:
        return self.encode(queries, "query", instruction, **kw)

    def encode_passages(self, passages: str | Sequence[str], **kw: Any) -> np.ndarray:
        return self.encode(passages, kind="passage", **kw)

    def embed(
        self,
        texts: str | Sequence[str],
        kind: TextKind = "passage",
        instruction: str | None = None,
        normalize: bool = True,
        long_text: LongText = "truncate",
        overlap: int = 0,
        progress: Progress | None = None,
        prompt: str | None = None,
        *,
        task: str | None = None,
        dimensions: int | None = None,
        truncate: bool = True,
        precision: str = "float32",
    ) -> EmbedResult:
        """Like encode(), but always (N, dim) and with this call's own Stats (tokens, padding, batches,
        truncation, and tokenize / queue / inference / total milliseconds). truncate=False refuses a text
        longer than max_length instead of cutting it."""
        self.check_precision(precision, normalize)
        items = [texts] if isinstance(texts, str) else check_texts(texts)
        work = self.prepare(
            items,
            kind=kind,
            instruction=pick_instruction(instruction, task),
            normalize=normalize,
            long_text=long_text,
            overlap=overlap,
            prompt=prompt,
            dimensions=dimensions,
            truncate=truncate,
        )
        vectors, stats = self.run(work, progress)
        return EmbedResult(self.quantize(vectors, precision), stats)

    # --- quantized output --------------------------------------------------------------------------------
    _calibration: Calibration | None = None  # a fake model's own (a loaded one's is its manifest's)

    @property
    def calibration(self) -> Calibration | None:
        """The per-dimension ranges and bit thresholds the export measured (None: an older export)."""
        if self._calibration is not None:
            return self._calibration
        return self.manifest.output_calibration if self.manifest is not None else None

    def check_precision(self, precision: str, normalize: bool = True) -> None:
        """Refuse a precision this call cannot give, before any work (the calibration is of normalized vectors)."""
        check_precision(precision)
        if precision in CALIBRATED and self.calibration is None:
            raise uncalibrated(precision)
        if precision != "float32" and not normalize:
            raise InvalidInputError(
                f"precision {precision!r} quantizes normalized vectors; drop normalize=False", param="precision"
            )

    def quantize(self, vectors: np.ndarray, precision: str) -> np.ndarray:
        """Normalized float32 vectors in a precision: float32 as they are, int8 / uint8 levels per dimension,
        binary / ubinary bits by per-dimension thresholds (the model's calibration), or binary-sign /
        ubinary-sign (bits by sign). Byte layouts as Cohere's embedding types and sentence-transformers'
        quantize_embeddings (e5rt.core.quantize)."""
        return quantize(vectors, check_precision(precision), self.calibration)

    def embed_tokens(self, ids: Sequence[Sequence[int]] | Sequence[np.ndarray], normalize: bool = True) -> EmbedResult:
        """Embed pre-tokenized inputs: complete model inputs, special tokens included, at most max_length each,
        run as they are (no prompt, nothing added)."""
        return EmbedResult(*self.run(self.prepare(token_ids=ids, normalize=normalize)))

    # --- the request, shaped once for the library and the server ---------------------------------------------
    def prepare(
        self,
        texts: Sequence[str] | None = None,
        *,
        token_ids: Sequence[Sequence[int]] | Sequence[np.ndarray] | None = None,
        kind: TextKind = "passage",
        instruction: str | None = None,
        normalize: bool = True,
        truncate: bool = True,
        direction: Direction = "right",
        long_text: LongText = "truncate",
        overlap: int = 0,
        prompt: str | None = None,
        dimensions: int | None = None,
        max_tokens: int | None = None,
    ) -> Prepared[np.ndarray]:
        """Texts (prompted, tokenized, cut or windowed) or complete token ids as the ids to run, and the finish
        step that makes them (N, dim) vectors (or (N, dimensions)) in input order. max_tokens: cut (or, with
        truncate=False, refuse) texts at fewer tokens than the model's max_length (Cohere's max_tokens)."""
        if long_text not in ("truncate", "chunk"):
            raise InvalidInputError(f"long_text must be 'truncate' or 'chunk', got {long_text!r}", param="long_text")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= self.dim
        ):
            raise InvalidInputError(
                f"dimensions must be in [1, {self.dim}] for this model, got {dimensions!r}", param="dimensions"
            )

        def vectors(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
            return cut_dimensions(vectors_from_sums(sums, weights, normalize), dimensions, normalize)

        if token_ids is not None:
            if long_text == "chunk":
                raise InvalidInputError(
                    "long_text='chunk' takes texts; token ids are complete model inputs and are run as sent",
                    param="long_text",
                )
            return Prepared(self.check_token_ids(token_ids), finish_rows(vectors))
        if texts is None:
            raise InputError("give texts or token_ids")
        if long_text == "chunk":
            win = self.windows(texts, kind, instruction, overlap, prompt)
            return Prepared(win.pieces, self._combine(win, vectors), tokenize_s=win.tokenize_s, chunks=len(win.pieces))
        enc, tokenize_s = self.tokenize(texts, kind, instruction, direction, prompt, max_tokens)
        check_truncation(
            enc,
            truncate,
            self.spec.max_length if max_tokens is None else min(max_tokens, self.spec.max_length),
            "input",
            "input",
            "shorten it, send truncate=true, or embed it whole with long_text='chunk'",
        )
        return Prepared(enc.ids, finish_rows(vectors), truncated=enc.truncated, tokenize_s=tokenize_s)

    def prepare_similarity(
        self, source: str, sentences: Sequence[str], kind: TextKind = "passage", instruction: str | None = None
    ) -> Prepared[list[float]]:
        """The source sentence embedded as a query, the sentences as `kind`: the cosine of each against it."""
        src, s1 = self.tokenize([source], "query", instruction)
        docs, s2 = self.tokenize(sentences, kind, instruction)

        def cosines(sums: np.ndarray, weights: np.ndarray) -> list[float]:
            vecs = vectors_from_sums(sums, weights, True)
            return [float(x) for x in vecs[1:] @ vecs[0]]

        return Prepared(
            src.ids + docs.ids, finish_rows(cosines), truncated=src.truncated + docs.truncated, tokenize_s=s1 + s2
        )

    def similarity(
        self, source: str, sentences: Sequence[str], kind: TextKind = "passage", instruction: str | None = None
    ) -> list[float]:
        """Cosine of a source sentence (embedded as a query) against each sentence (TEI's /similarity)."""
        return self.run(self.prepare_similarity(source, check_texts(sentences, "sentences"), kind, instruction))[0]

    def tokenize(
        self,
        texts: Sequence[str],
        kind: TextKind = "passage",
        instruction: str | None = None,
        direction: Direction = "right",
        prompt: str | None = None,
        max_tokens: int | None = None,
    ) -> tuple[Encoded, float]:
        """Prompted and tokenized (truncated to max_length, or max_tokens when fewer, from the given end), with
        the seconds it took."""
        t0 = time.perf_counter()
        enc = self.tokenizer.encode(
            format_texts(list(texts), self.spec.prompt_scheme, kind, instruction, prompt), direction, max_tokens
        )
        return enc, time.perf_counter() - t0

    def tokens(
        self, texts: list[str], specials: bool = True, kind: TextKind | None = None, instruction: str | None = None
    ) -> list[list[dict[str, Any]]]:
        """Every token of every text (prompted when a kind is given) with its id, piece and character span: with
        specials (the default) the ids are the complete model input embed_tokens takes."""
        if kind is not None:
            texts = format_texts(texts, self.spec.prompt_scheme, kind, instruction)
        return self.tokenizer.tokens(texts, specials)

    # --- long texts -------------------------------------------------------------------------------------
    def windows(
        self,
        texts: Sequence[str],
        kind: TextKind = "passage",
        instruction: str | None = None,
        overlap: int = 0,
        prompt: str | None = None,
    ) -> Windows:
        """Prompted texts as windows of max_length - specials content tokens (overlapping by `overlap`), each
        wrapped in the special tokens: long_text="chunk"'s first half (the finish step combines them)."""
        t0 = time.perf_counter()
        prompted = format_texts(list(texts), self.spec.prompt_scheme, kind, instruction, prompt)
        return self.cut_windows(self.tokenizer.encode_content(prompted), overlap, t0)

    def cut_windows(self, contents: Sequence[np.ndarray], overlap: int = 0, t0: float | None = None) -> Windows:
        """Token ids without special tokens (one array per text) as wrapped windows; see windows()."""
        t0 = time.perf_counter() if t0 is None else t0
        window = self.spec.max_length - self.tokenizer.n_special
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < window:
            raise InvalidInputError(f"overlap must be an integer in [0, {window}), got {overlap!r}", param="overlap")
        step = window - overlap
        owners: list[int] = []
        pieces: list[np.ndarray] = []
        for i, content in enumerate(contents):
            starts = range(0, max(len(content) - overlap, 1), step) if len(content) > window else range(1)
            for s in starts:
                pieces.append(self.tokenizer.wrap(content[s : s + window]))
                owners.append(i)
        return Windows(pieces, np.asarray(owners, dtype=np.int64), len(contents), time.perf_counter() - t0)

    def _combine(
        self, windows: Windows, vectors: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> Callable[[Submission], tuple[np.ndarray, Stats]]:
        """The finish step of windows: one vector per text, the token-weighted mean of its windows."""
        cls_pooling = self.spec.pooling == "cls"
        dim = self.dim

        def finish(request: Submission) -> tuple[np.ndarray, Stats]:
            done = request.future.result()
            sums, counts = done.sums, done.weights
            if cls_pooling:
                # CLS has no per-token sum; weight each window's CLS vector by its token count instead.
                counts = np.asarray(done.lengths, dtype=np.float32)
                sums = sums * counts[:, None]
            total = np.zeros((windows.texts, dim), dtype=np.float32)
            weight = np.zeros(windows.texts, dtype=np.float32)
            np.add.at(total, windows.owners, sums)  # sum of masked sums = token-weighted mean of window means
            np.add.at(weight, windows.owners, counts)
            return vectors(total, weight), replace(done.stats(), texts=windows.texts)

        return finish


@dataclass(frozen=True)
class Windows:
    """Texts cut into model-sized windows: the pieces to embed and which text each belongs to."""

    pieces: list[np.ndarray]
    owners: np.ndarray  # text index of each piece
    texts: int
    tokenize_s: float
