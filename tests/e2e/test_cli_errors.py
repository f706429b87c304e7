"""Every CLI mistake a user makes ends as one line `e5rt: error: …`, exit status 2, and no partial output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

E5RT = shutil.which("e5rt", path=str(Path(sys.executable).parent)) or shutil.which("e5rt")


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    assert E5RT, "the e5rt console script is not installed (pip install -e .)"
    proc = subprocess.run(
        [E5RT, *args], input=stdin, capture_output=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("e5rt: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def model(tiny_models: dict[str, Path]) -> str:
    return str(tiny_models["bert"])


def test_input_file_not_utf8_names_file_and_line(model: str, tmp_path: Path) -> None:
    src = tmp_path / "latin1.txt"
    src.write_bytes("first line\nsecond line\ncaf\xe9 au lait\n".encode("latin-1"))
    out = tmp_path / "out.npy"
    proc = run("embed", model, "-i", str(src), "-o", str(out))
    assert_one_line_error(proc, f"{src}:3:", "--encoding")
    assert not out.exists() and list(tmp_path.iterdir()) == [src]
    ok = run("embed", model, "-i", str(src), "-o", str(out), "--encoding", "latin-1")
    assert ok.returncode == 0 and out.is_file()


def test_invalid_utf8_on_stdin(model: str) -> None:
    assert_one_line_error(run("embed", model, stdin=b"good\n\xff\xfe bad\n"), "<stdin>:2:", "--encoding")


def test_output_folder_missing(model: str, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    assert_one_line_error(run("embed", model, "-i", str(src), "-o", str(tmp_path / "nope" / "x.npy")), "does not exist")


def test_unknown_output_suffix_refused_before_work(model: str, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    out = tmp_path / "out.csv"
    assert_one_line_error(run("embed", model, "-i", str(src), "-o", str(out)), ".csv", ".npy or .jsonl")
    assert not out.exists()


def test_lone_surrogate_names_the_text(model: str, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine"}\n{"text": "bad \\ud800 here"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = run("embed", model, "-i", str(src), "-o", str(out))
    assert_one_line_error(proc, f"{src}:2:", "lone surrogate", "--on-error skip")
    assert not out.exists() and "TextEncodeInput" not in proc.stderr


def test_missing_model_and_input(model: str, tmp_path: Path) -> None:
    assert_one_line_error(run("embed", str(tmp_path / "no-model"), stdin=b"x\n"), "not a directory")
    assert_one_line_error(run("embed", model, "-i", str(tmp_path / "missing.txt")), "missing.txt: no such file")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a"}\n{not json}\n')
    assert_one_line_error(run("embed", model, "-i", str(bad_json)), f"{bad_json}:2: not valid JSON")


def test_failed_run_leaves_no_partial_output_and_keeps_an_old_file(model: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("previous result\n")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "ok"}) + "\n" + '{"text": "\\udfff"}\n')
    proc = run("embed", model, "-i", str(src), "-o", str(out))
    assert proc.returncode == 2
    assert out.read_text() == "previous result\n"  # replaced only by a complete result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_library_raises_input_error_for_surrogates(tiny_models: dict[str, Path]) -> None:
    from e5rt import Embedder, InputError

    emb = Embedder.load(tiny_models["bert"], variant="fp32", provider="cpu")
    with pytest.raises(InputError, match=r"texts\[2\]"):
        emb.encode(["a", "b", "c\ud83dd"])


def test_ray_errors_name_the_flags_while_the_library_names_its_parameters(model: str, tmp_path: Path) -> None:
    """ray_embed_file speaks of id_field / input_path / out; `e5rt embed --ray` of --id-field / -i / -o."""
    pytest.importorskip("ray")
    from e5rt.errors import InvalidInputError
    from e5rt.ray import ray_embed_file

    src = tmp_path / "in.parquet"
    src.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="^id_field is required") as info:
        ray_embed_file(src, model, tmp_path / "out")
    assert info.value.param == "id_field"
    out = f"{tmp_path / 'out'}/"
    assert_one_line_error(run("embed", model, "--ray", "-i", str(src), "-o", out), "--id-field is required")
    missing = str(tmp_path / "none.parquet")
    assert_one_line_error(
        run("embed", model, "--ray", "-i", missing, "-o", out, "--id-field", "id"), f"-i {missing}: no such file"
    )
