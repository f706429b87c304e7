"""Quantized output vectors: int8 / uint8 levels and packed bits, from normalized float32 embeddings.

The byte layouts are sentence-transformers' quantize_embeddings and Cohere's embedding types: uint8 is a level
0..255 per dimension, int8 that level - 128; ubinary packs one bit per dimension, 8 per byte, first dimension in
the high bit (numpy.packbits), dim/8 bytes; binary is those bytes - 128 as int8. What decides a level or a bit is
the model's calibration (measured at export, e5rt_export's output calibration, stored in the manifest): a
per-dimension [min, max] range cut into 256 levels (floor, clipped: a value outside the range takes the end
level), and a per-dimension threshold for bits. E5 vectors share a large common direction (unrelated passages
have cosines ~0.8), so most dimensions have one sign for every text: sign bits ("binary-sign", "ubinary-sign",
no calibration needed) lose most of the ranking, median thresholds keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import InvalidInputError, ManifestError

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary", "binary-sign", "ubinary-sign"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary", "binary-sign", "ubinary-sign")
CALIBRATED = ("int8", "uint8", "binary", "ubinary")


@dataclass(frozen=True)
class Calibration:
    """Per-dimension output ranges (int8 / uint8) and bit thresholds (binary / ubinary), with how they were
    computed (the manifest's "output_calibration")."""

    low: np.ndarray  # (dim,) float32: the level-0 value of each dimension
    high: np.ndarray  # (dim,) float32: the level-255 value
    thresholds: np.ndarray  # (dim,) float32: a bit is 1 where the value is above its dimension's threshold
    method: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    @classmethod
    def from_manifest(cls, raw: dict[str, Any]) -> Calibration:
        low = np.asarray(raw["int8"]["low"], dtype=np.float32)
        high = np.asarray(raw["int8"]["high"], dtype=np.float32)
        thresholds = np.asarray(raw["binary"]["thresholds"], dtype=np.float32)
        if not (low.shape == high.shape == thresholds.shape and low.ndim == 1):
            raise ManifestError("manifest: output_calibration's low, high and thresholds must be vectors of one length")
        method = {k: v for k, v in raw.items() if k not in ("int8", "binary")}
        method["int8"] = raw["int8"].get("method", "")
        method["binary"] = raw["binary"].get("method", "")
        return cls(low, high, thresholds, method)

    def as_manifest(self) -> dict[str, Any]:
        out = {k: v for k, v in self.method.items() if k not in ("int8", "binary")}
        out["int8"] = {
            "method": self.method.get("int8", ""),
            "low": [round(float(x), 7) for x in self.low],
            "high": [round(float(x), 7) for x in self.high],
        }
        out["binary"] = {
            "method": self.method.get("binary", ""),
            "thresholds": [round(float(x), 7) for x in self.thresholds],
        }
        return out


def check_precision(precision: object, param: str = "precision") -> str:
    """The precision name, or the InvalidInputError that lists them."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"{param} must be one of {', '.join(PRECISIONS)}, got {precision!r}", param=param)
    return str(precision)


def levels(vectors: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Each value's level 0..255 within its dimension's [low, high] (floor; clipped at the ends)."""
    steps = (high - low) / 255.0
    steps = np.where(steps == 0, 1.0, steps)
    return np.asarray(np.clip(np.floor((vectors - low) / steps), 0, 255))


def pack_bits(vectors: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """One bit per dimension (above its threshold), 8 per byte, first dimension in the high bit: (N, ceil(dim/8))."""
    return np.packbits(vectors > thresholds, axis=-1).reshape(vectors.shape[0], -1)


def quantize(vectors: np.ndarray, precision: str, calibration: Calibration | None = None) -> np.ndarray:
    """(N, dim) float32 vectors (normalized) in the given precision: float32 as they are; int8 / uint8 (N, dim);
    binary / ubinary and their -sign forms (N, dim/8). The calibrated precisions need the model's calibration."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise InvalidInputError(f"quantize takes (N, dim) vectors, got shape {vectors.shape}")
    if precision == "float32":
        return vectors
    if precision in ("binary-sign", "ubinary-sign"):
        packed = pack_bits(vectors, 0.0)
        return _signed(packed) if precision == "binary-sign" else packed
    if precision not in CALIBRATED:
        check_precision(precision)
    if calibration is None:
        raise uncalibrated(precision)
    if calibration.dim != vectors.shape[1]:
        raise InvalidInputError(
            f"precision {precision!r}: the calibration has {calibration.dim} dimensions, the vectors "
            f"{vectors.shape[1]} (a shortened vector has no calibration; ask for the full dimensions)",
            param="precision",
        )
    if precision in ("int8", "uint8"):
        q = levels(vectors, calibration.low, calibration.high)
        return (q - 128).astype(np.int8) if precision == "int8" else q.astype(np.uint8)
    packed = pack_bits(vectors, calibration.thresholds)
    return _signed(packed) if precision == "binary" else packed


def uncalibrated(precision: str) -> InvalidInputError:
    """The error for a calibrated precision asked of a model directory exported without a calibration."""
    return InvalidInputError(
        f"precision {precision!r} needs the model's output calibration, which this model directory does not "
        "have: export it again with `e5rt export` (the export measures the ranges), or quantize the float32 "
        "vectors yourself with e5rt.core.quantize.quantize_embeddings(vectors, precision, ranges=..., "
        "thresholds=...)",
        param="precision",
    )


def _signed(packed: np.ndarray) -> np.ndarray:
    """ubinary bytes as binary: each byte - 128, as int8 (Cohere's and sentence-transformers' signed layout)."""
    return (packed.astype(np.int16) - 128).astype(np.int8)


def quantize_embeddings(
    vectors: np.ndarray,
    precision: str,
    ranges: np.ndarray | None = None,
    thresholds: np.ndarray | float | None = None,
) -> np.ndarray:
    """Quantize float32 vectors with explicit calibration: ranges (2, dim) [low; high] for int8 / uint8,
    thresholds (dim,) or one number for binary / ubinary (0: sign bits). For vectors from a model directory
    without an output calibration, or a calibration of your own."""
    check_precision(precision)
    vectors = np.asarray(vectors, dtype=np.float32)
    dim = vectors.shape[-1]
    if precision in ("int8", "uint8"):
        if ranges is None:
            raise InvalidInputError(f"precision {precision!r} needs ranges=(2, dim) [low; high]", param="ranges")
        r = np.asarray(ranges, dtype=np.float32)
        if r.shape != (2, dim):
            raise InvalidInputError(f"ranges must have shape (2, {dim}), got {r.shape}", param="ranges")
        cal = Calibration(r[0], r[1], np.zeros(dim, np.float32), {})
        return quantize(vectors, precision, cal)
    if precision in ("binary", "ubinary"):
        if thresholds is None:
            raise InvalidInputError(
                f"precision {precision!r} needs thresholds (per dimension, or 0 for sign bits)", param="thresholds"
            )
        t = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (dim,))
        cal = Calibration(np.zeros(dim, np.float32), np.ones(dim, np.float32), np.array(t), {})
        return quantize(vectors, precision, cal)
    return quantize(vectors, precision)


def calibrate(vectors: np.ndarray, texts: int, source: str) -> Calibration:
    """The output calibration of a model from its normalized float32 vectors of a calibration set: per-dimension
    min / max (int8 / uint8) and medians (bits)."""
    v = np.asarray(vectors, dtype=np.float32)
    return Calibration(
        low=v.min(axis=0),
        high=v.max(axis=0),
        thresholds=np.median(v, axis=0).astype(np.float32),
        method={
            "texts": int(texts),
            "source": source,
            "normalized": True,
            "int8": "per-dimension min and max of the calibration vectors, 256 levels (floor, clipped)",
            "binary": "per-dimension median of the calibration vectors",
        },
    )
