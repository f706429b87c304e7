"""A verified model file is not hashed again while its device, inode, size and mtime are unchanged; a file
rewritten in place is hashed again and refused if its bytes changed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import e5rt.manifest as manifest
from e5rt.errors import IntegrityError
from e5rt.manifest import FileEntry, Parity, Variant, verify_files


def _variant(path: Path) -> Variant:
    data = path.read_bytes()
    entry = FileEntry(path=path.name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    parity = Parity(min_cos=1.0, mean_cos=1.0, max_abs_diff=0.0, n_texts=1, threshold=0.99, passed=True)
    return Variant("fp32", "fp32", (entry,), ("cpu",), {}, None, parity)


def test_a_verified_file_is_hashed_once_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights" * 1000)
    variant, stamps = _variant(model), tmp_path / "stamps"
    hashed: list[Path] = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    verify_files(tmp_path, variant, stamps)
    verify_files(tmp_path, variant, stamps)
    assert hashed == [model] and len(list(stamps.iterdir())) == 1
    # same size, other bytes, written later: hashed again and refused
    model.write_bytes(b"WEIGHTS" * 1000)
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    with pytest.raises(IntegrityError, match="does not match"):
        verify_files(tmp_path, variant, stamps)
    assert len(hashed) == 2


def test_a_read_only_cache_hashes_every_time(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    verify_files(tmp_path, _variant(model), blocker / "stamps")  # cannot create it: still verifies, no error
