"""e5rt's export stage: Hugging Face checkpoint -> validated ONNX model directory (fp32, fp16, int8, int8-static).

Imports torch and transformers (torch.onnx writes the graphs); the runtime package e5rt never imports this package.
"""

from .errors import (
    DiskSpaceError,
    ExportError,
    HubUnreachableError,
    MissingTokenizerError,
    OutputExistsError,
    OutputNotWritableError,
    ParityError,
    UnsupportedArchitectureError,
)
from .pipeline import ALL_VARIANTS, ExportOptions, export_checkpoint, export_model, parse_variants, summary_lines

__all__ = [
    "ALL_VARIANTS",
    "DiskSpaceError",
    "ExportError",
    "ExportOptions",
    "HubUnreachableError",
    "MissingTokenizerError",
    "OutputExistsError",
    "OutputNotWritableError",
    "ParityError",
    "UnsupportedArchitectureError",
    "export_checkpoint",
    "export_model",
    "parse_variants",
    "summary_lines",
]
