"""sentence-transformers code on e5rt: change one import, keep the calls.

    from e5rt.integrations.sentence_transformers import SentenceTransformer
    model = SentenceTransformer("models/me5-small-r")
    embeddings = model.encode(sentences)             # numpy, as sentence-transformers returns
    q = model.encode_query(["..."]); d = model.encode_document(["..."])
    scores = model.similarity(q, d)                   # cosine matrix (numpy)

Prompts follow sentence-transformers: encode() without a prompt embeds the texts as they are; prompt_name picks
one of `prompts` (built from the model's scheme: "query", "document"/"passage", and for instruct models one per
e5rt.TASKS name); prompt= is a literal prefix. encode_query / encode_document use the query / document prompt.
Needs no torch: vectors are numpy arrays; convert_to_tensor=True works only where torch is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.prompts import TASKS, format_texts
from ..engine import Embedder
from ..errors import ConfigError, InputError, MissingExtraError
from ..ops import similarity as cosine

_DEVICES = {"cpu": "cpu", "cuda": "cuda"}


def _prompts(scheme: str) -> dict[str, str]:
    """The model's prompts as sentence-transformers' name -> prefix table."""

    def prefix(kind: str, task: str | None = None) -> str:
        return format_texts([""], scheme, "query" if kind == "query" else "passage", task)[0]

    table = {"query": prefix("query"), "document": prefix("passage"), "passage": prefix("passage")}
    if scheme == "instruct":
        table.update({name: prefix("query", name) for name in TASKS})
    return table


class SentenceTransformer:
    """The sentence-transformers SentenceTransformer calls the seed article's code uses, on an e5rt model.

    model_dir first, then Embedder.load's options (variant=, provider=, threads=, ...); device="cpu"/"cuda" is
    taken as the provider. prompts / default_prompt_name as in sentence-transformers.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        truncate_dim: int | None = None,
        **load_options: Any,
    ) -> None:
        if device is not None:
            if device.split(":")[0] not in _DEVICES:
                raise ConfigError(f"device must be 'cpu' or 'cuda', got {device!r}")
            load_options.setdefault("provider", _DEVICES[device.split(":")[0]])
        self.embedder = Embedder.load(model_dir, **load_options)
        manifest = self.embedder.manifest
        self._model_normalizes = bool(manifest.normalize) if manifest is not None else True
        self.prompts = {**_prompts(self.embedder.spec.prompt_scheme), **(prompts or {})}
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ConfigError(f"default_prompt_name {default_prompt_name!r} is not one of {sorted(self.prompts)}")
        self.default_prompt_name = default_prompt_name
        self.truncate_dim = self._check_dim(truncate_dim)
        self.similarity_fn_name = "cosine"
        self.device = "cuda" if "cuda" in self.embedder.providers[0].lower() else "cpu"

    # --- properties sentence-transformers code reads -----------------------------------------------------
    @property
    def max_seq_length(self) -> int:
        return self.embedder.spec.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if value != self.embedder.spec.max_length:
            raise ConfigError(
                f"max_seq_length is fixed by the exported model ({self.embedder.spec.max_length} tokens); "
                "texts are truncated to it, or embed long texts whole with e5rt's long_text='chunk'"
            )

    def get_sentence_embedding_dimension(self) -> int:
        return self.truncate_dim or self.embedder.dim

    def get_max_seq_length(self) -> int:
        return self.max_seq_length

    # --- encoding ----------------------------------------------------------------------------------------
    def encode(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Embeddings of the sentences: (dim,) for one string, (N, dim) for a list (numpy float32).

        batch_size and show_progress_bar are accepted and not needed: e5rt cuts its own token-budget batches.
        """
        if kwargs:
            raise ConfigError(f"unsupported encode option(s): {', '.join(sorted(kwargs))}")
        if output_value != "sentence_embedding":
            raise ConfigError(f"output_value={output_value!r} is not served; e5rt returns sentence embeddings only")
        if precision != "float32":
            raise ConfigError(f"precision={precision!r} is not served; e5rt returns float32 embeddings")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        text = self._prompt(prompt_name, prompt)
        normalize = normalize_embeddings or self._model_normalizes
        vectors = self.embedder.encode(
            list(sentences) if not isinstance(sentences, str) else sentences, normalize=normalize, prompt=text
        )
        dim = self._check_dim(truncate_dim) or self.truncate_dim
        if dim is not None:
            vectors = vectors[..., :dim]
            if normalize_embeddings:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        return self._convert(vectors, convert_to_numpy, convert_to_tensor)

    def encode_query(self, sentences: str | Sequence[str], prompt_name: str | None = None, **kw: Any) -> Any:
        """encode() with the query prompt (or the prompt_name / prompt given)."""
        return self.encode(sentences, prompt_name=self._named(prompt_name, kw, ("query",)), **kw)

    def encode_document(self, sentences: str | Sequence[str], prompt_name: str | None = None, **kw: Any) -> Any:
        """encode() with the document prompt (or the prompt_name / prompt given)."""
        return self.encode(sentences, prompt_name=self._named(prompt_name, kw, ("document", "passage")), **kw)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """Cosine similarity matrix (sentence-transformers' default similarity function), as numpy."""
        return cosine(np.asarray(embeddings1), np.asarray(embeddings2))

    # --- helpers -----------------------------------------------------------------------------------------
    def _named(self, given: str | None, kw: dict[str, Any], names: tuple[str, ...]) -> str | None:
        if given is not None or kw.get("prompt") is not None:
            return given
        return next((n for n in names if n in self.prompts), None)

    def _prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ConfigError(f"prompt_name {name!r} is not one of {sorted(self.prompts)}")
        return self.prompts[name]

    def _check_dim(self, dim: int | None) -> int | None:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= self.embedder.dim):
            raise ConfigError(f"truncate_dim must be an integer in [1, {self.embedder.dim}], got {dim!r}")
        return dim

    @staticmethod
    def _convert(vectors: np.ndarray, to_numpy: bool, to_tensor: bool) -> Any:
        if to_tensor:
            try:
                import torch
            except ImportError:
                raise MissingExtraError(
                    "convert_to_tensor=True needs torch, which e5rt does not use; "
                    "use the numpy result (convert_to_numpy=True, the default) or install torch"
                ) from None
            return torch.from_numpy(np.ascontiguousarray(vectors))
        if to_numpy or vectors.ndim == 1:
            return vectors
        return list(vectors)
