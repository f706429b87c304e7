"""Each option is declared once (config.Flag on its field): the README's table, the CLI's flags and their
E5RT_* variables, and /info's limits all come from that declaration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e5rt.config import BatchOptions, LoadOptions, ServeOptions, SourceOptions, flag_table, flags_of
from e5rt.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_docs_table_is_the_declaration() -> None:
    page = (ROOT / "docs" / "serving.md").read_text()
    block = re.search(r"<!-- serve-flags:start -->\n(.*?)\n<!-- serve-flags:end -->", page, re.S)
    assert block is not None
    assert block.group(1).strip() == flag_table(ServeOptions, LoadOptions, BatchOptions, SourceOptions)


def _serve_args(argv: list[str]) -> dict[str, object]:
    from e5rt.cli import build_parser

    return vars(build_parser().parse_args(["serve", "fake:8", *argv]))


def test_every_declared_option_is_a_serve_flag_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    declared = [*flags_of(ServeOptions), *flags_of(LoadOptions), *flags_of(BatchOptions), *flags_of(SourceOptions)]
    defaults = _serve_args([])
    for name, _ in declared:
        assert name in defaults, name
    samples = {"--host": "0.0.0.0", "--port": "9001", "--variant": "fp32", "--provider": "cpu", "--api-key": "k"}
    samples["--bulk-share"] = "0.3"
    for name, flag in declared:
        text = samples.get(flag.flag, "false" if flag.boolean else "7")
        if flag.flag == "--served-model-name":
            text = "named"
        value = flag.parse(text)
        monkeypatch.setenv(flag.env, text)
        assert _serve_args([])[name] == value, flag.env  # the variable sets the default
        monkeypatch.delenv(flag.env)
        given = ([f"--no-{flag.flag[2:]}"] if value is False else [flag.flag]) if flag.boolean else [flag.flag, text]
        assert _serve_args(given)[name] == value, flag.flag  # and the flag sets it


def test_bad_variable_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from e5rt.errors import E5rtError

    monkeypatch.setenv("E5RT_MAX_CLIENT_BATCH_SIZE", "lots")
    with pytest.raises(E5rtError, match="E5RT_MAX_CLIENT_BATCH_SIZE='lots'"):
        _serve_args([])


def test_info_limits_are_the_declared_limits() -> None:
    from e5rt import Embedder
    from e5rt.server.service import InferenceService, server_info

    opts = ServeOptions()
    info = server_info(InferenceService(Embedder.fake, opts), Embedder.fake(8))
    limits = {name for name, flag in flags_of(ServeOptions) if flag.limit}
    assert set(info["limits"]) == limits | {"auth"}
    assert {"max_client_batch_size", "accept_token_ids", "payload_limit"} <= limits


def test_server_bulk_share_default_is_the_schedulers() -> None:
    from e5rt.batching.scheduler import DEFAULT_BULK_SHARE

    assert ServeOptions().bulk_share == DEFAULT_BULK_SHARE


def test_serve_workers_default_is_two_half_thread_batches_on_a_cpu() -> None:
    from e5rt.config import serve_workers
    from e5rt.errors import ConfigError

    assert serve_workers(None, 2, cpu=True) == (2, 1)  # two one-thread batches at once (a lone text: both)
    assert serve_workers(None, 1, cpu=True) == (1, 1)  # nothing to split
    assert serve_workers(None, 8, cpu=False) == (1, 8)  # a GPU session runs one batch at a time
    assert serve_workers(1, 2, cpu=True) == (1, 2)  # --workers 1: one batch on every thread
    assert serve_workers(4, 8, cpu=True) == (4, 2)  # the threads split between the workers
    assert serve_workers(3, 2, cpu=True) == (3, 1)  # never below one thread a batch
    with pytest.raises(ConfigError, match="workers"):
        ServeOptions(workers=0)


def test_spin_policy_takes_its_names_and_the_old_booleans() -> None:
    """LoadOptions.spin: run (the default) / always / off; True and False (its older values) mean always, off."""
    assert LoadOptions().spin == "run"
    assert (LoadOptions(spin=True).spin, LoadOptions(spin=False).spin) == ("always", "off")  # type: ignore[arg-type]
    assert LoadOptions.build(spin="always").spin == "always"
    with pytest.raises(ConfigError, match="spin must be one of run, always, off"):
        LoadOptions(spin="sometimes")
