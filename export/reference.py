"""The PyTorch reference every parity figure is measured against: one mean pooling, one model loader.

Used by export validation, by `e5rt bench`'s PyTorch engine and by the GPU benchmark, so all three compare
against the same computation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_reference_model(
    checkpoint: str | Path, dtype: Any = None, attn_implementation: str = "eager", device: str = "cpu"
) -> Any:
    """transformers AutoModel without the pooling head, in eval mode."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers 5 draws a bar per load on stderr; the export has its own steps

    model = AutoModel.from_pretrained(
        str(checkpoint),
        dtype=dtype or torch.float32,
        attn_implementation=attn_implementation,
        add_pooling_layer=False,
    )
    return model.to(device).eval()


def load_reference_classifier(checkpoint: str | Path, attn_implementation: str = "eager") -> Any:
    """transformers AutoModelForSequenceClassification (a cross-encoder, logits out), fp32, eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    model = AutoModelForSequenceClassification.from_pretrained(
        str(checkpoint), dtype=torch.float32, attn_implementation=attn_implementation
    )
    return model.eval()


def torch_pool(hidden: Any, mask: Any, pooling: str = "mean", normalize: bool = True) -> Any:
    """Masked mean (or CLS) of (B, L, H) hidden states in fp32, then L2-normalized: the reference pooling."""
    import torch

    hidden = hidden.float()
    if pooling == "cls":
        pooled = hidden[:, 0, :]
    else:
        m = mask.unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled
