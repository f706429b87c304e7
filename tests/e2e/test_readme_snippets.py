"""Every marked snippet of the README and docs/ (the integrations page's "Use it from ..." ones) runs as written:
in-process ones against a model directory, server ones against `e5rt serve` on 127.0.0.1 (the page's URL and
model path are swapped for the test's), every one in a process of its own. A snippet is found by its marker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.serving import Server

ROOT = Path(__file__).resolve().parents[2]
MARKED = re.compile(r"<!-- snippet: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)```", re.S)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = {m["name"]: m["code"] for page in PAGES for m in MARKED.finditer(page.read_text())}
EXPECTED = {
    "openai",
    "langchain",
    "langchain-server",
    "llama-index",
    "llama-index-server",
    "haystack",
    "haystack-server",
    "huggingface-hub",
    "sentence-transformers",
}
URL = "http://127.0.0.1:8080"


def test_every_framework_has_its_snippets() -> None:
    assert EXPECTED <= set(SNIPPETS)


@pytest.fixture(scope="module")
def server(instruct_minilm: Path) -> Iterator[Server]:
    s = Server(str(instruct_minilm), "--log-level", "warning")
    yield s
    assert s.stop() == 0


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippet_runs(name: str, instruct_minilm: Path, request: pytest.FixtureRequest) -> None:
    code = SNIPPETS[name]
    code = code.replace("models/me5-small-r", str(instruct_minilm))
    if URL in code:
        code = code.replace(URL, request.getfixturevalue("server").url)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # hub clients refuse URLs offline
    env.update(HAYSTACK_TELEMETRY_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", ANONYMIZED_TELEMETRY="False")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"{name}:\n{code}\n{proc.stderr[-4000:]}"
    assert proc.stdout.strip(), f"{name} printed nothing"
