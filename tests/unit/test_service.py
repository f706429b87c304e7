"""The serving core without HTTP: lifecycle, every task's requests through the shared queue (the same prepare
step the library runs inline), a caller that goes away, and e5rt errors whose kinds (not the core) decide the
HTTP status. Runs without Starlette."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from e5rt import Classifier, Embedder, Reranker
from e5rt.config import ServeOptions
from e5rt.errors import HTTP_STATUS, NotReadyError, WrongTaskError
from e5rt.manifest import ModelKind
from e5rt.server.service import ClientGone, InferenceService, Lifecycle

EMBED, RERANK, CLASSIFY = ModelKind.EMBED, ModelKind.RERANK, ModelKind.CLASSIFY


async def _never() -> None:
    await asyncio.Event().wait()


def test_core_imports_no_http_framework() -> None:
    code = (
        "import sys, e5rt.server.service; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().replace("'", '"')) == []


def test_lifecycle_and_embedding() -> None:
    model = Embedder.fake(16)
    service = InferenceService(lambda: Embedder.fake(16), ServeOptions())
    assert service.state is Lifecycle.LOADING
    with pytest.raises(NotReadyError) as info:
        service.ready()
    assert info.value.kind == "unavailable" and HTTP_STATUS[info.value.kind] == 503 and info.value.code == "loading"
    service.load()
    assert service.state is Lifecycle.READY

    async def go() -> None:
        texts = ["hello", "a longer passage about kimchi"]
        vectors, stats = await service.call(EMBED, lambda m: m.prepare(texts), _never, len(texts))
        np.testing.assert_allclose(vectors, model.encode(texts), atol=1e-6)
        assert stats.texts == 2
        many = [f"text {i}" for i in range(40)]  # shaped on the thread pool, not the event loop
        vectors, _ = await service.call(EMBED, lambda m: m.prepare(many), _never, len(many), 400)
        np.testing.assert_allclose(vectors, model.encode(many), atol=1e-6)
        q, _ = await service.call(EMBED, lambda m: m.prepare(["hi"], kind="query", instruction="qa"), _never, 1)
        np.testing.assert_allclose(q[0], model.encode_queries("hi", task="qa"), atol=1e-6)
        scores, _ = await service.call(EMBED, lambda m: m.prepare_similarity("hi", ["hi", "kimchi"]), _never, 3)
        assert scores == pytest.approx(model.similarity("hi", ["hi", "kimchi"]), abs=1e-6)
        with pytest.raises(WrongTaskError):
            await service.call(RERANK, lambda m: m.prepare("q", ["d"]), _never, 1)

    asyncio.run(go())
    service.drain()
    assert service.state is Lifecycle.DRAINING
    with pytest.raises(NotReadyError, match="shutting down"):
        service.ready()
    service.close()


def test_a_caller_that_goes_away_has_its_texts_dropped() -> None:
    # 2,000 texts span several batches: a request that fits in one is not watched (service.run)
    service = InferenceService(lambda: Embedder.fake(16, delay_s=0.05), ServeOptions())
    service.load()

    async def gone_now() -> None:
        await asyncio.sleep(0.01)

    async def go() -> None:
        with pytest.raises(ClientGone):
            texts = [f"text {i}" for i in range(2000)]
            await service.call(EMBED, lambda m: m.prepare(texts), gone_now, len(texts), 20000)

    asyncio.run(go())
    assert service.queue is not None and service.queue.dropped_texts > 0
    service.close()


def test_failed_load_is_reported() -> None:
    def broken() -> Embedder:
        raise FileNotFoundError("no model here")

    service = InferenceService(broken, ServeOptions())
    service.load()
    assert service.state is Lifecycle.FAILED and "no model here" in (service.error or "")
    with pytest.raises(NotReadyError, match="failed to load"):
        service.ready()


def test_rerankers_and_classifiers_go_the_same_road() -> None:
    """The core runs any task's prepare step: a fake reranker's and a fake classifier's answers through the
    queue are the library's, and each refuses the other tasks' requests."""
    for model, kind in ((Reranker.fake(), RERANK), (Classifier.fake(("neg", "neu", "pos")), CLASSIFY)):
        service = InferenceService(lambda model=model: model, ServeOptions(), kind=kind)  # type: ignore[misc]
        service.load()

        async def go(model: object = model, kind: ModelKind = kind, service: InferenceService = service) -> None:
            if kind is RERANK:
                docs = ["kimchi", "a long text about fermented cabbage", "x"]
                got, stats = await service.call(kind, lambda m: m.prepare("q", docs, top_n=2), _never, 3)
                assert got == model.rerank("q", docs, top_n=2) and len(got) == 2  # type: ignore[attr-defined]
                assert stats.texts == 3
            else:
                inputs = ["one text", ("a", "pair"), "x"]
                got, _ = await service.call(kind, lambda m: m.prepare(inputs), _never, 3)
                assert got == model.predict(inputs)  # type: ignore[attr-defined]
            with pytest.raises(WrongTaskError):
                await service.call(EMBED, lambda m: m.prepare(["t"]), _never, 1)

        asyncio.run(go())
        service.close()


def test_the_serving_policy_is_one_function_for_the_cli_and_python() -> None:
    """e5rt serve and serve() from Python both turn sources into models with model_entries: fake:DIM, the
    refusals before a port is bound, and the serving load options."""
    from e5rt.config import LoadOptions
    from e5rt.errors import ConfigError
    from e5rt.server.models import model_entries, serving_load_options

    (entry,) = model_entries(["fake:8"], ServeOptions())
    assert entry.kind is EMBED and entry.loader().dim == 8
    with pytest.raises(ConfigError, match="name a model"):
        model_entries([], ServeOptions())
    with pytest.raises(ConfigError, match="--served-model-name names one model"):
        model_entries(["fake:8", "fake:4"], ServeOptions(served_model_name="x"))
    with pytest.raises(ConfigError, match="fake:DIM"):
        model_entries(["fake:zero"], ServeOptions())
    served = serving_load_options(LoadOptions(provider="cpu", threads=2))
    assert (served.spin, served.share_weights, served.batching.max_batch_tokens, served.threads) == (
        "run",
        True,
        512,
        2,
    )
