"""The serving core without HTTP: lifecycle, embedding through the shared queue, a caller that goes away,
and errors whose kinds (not the core) decide the HTTP status. Runs without Starlette."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from e5rt import Embedder
from e5rt.config import ServeOptions
from e5rt.errors import HTTP_STATUS
from e5rt.server.protocol import ApiError, EmbedCall, SimilarityCall
from e5rt.server.service import ClientGone, InferenceService, Lifecycle


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
    with pytest.raises(ApiError) as info:
        service.ready()
    assert info.value.kind == "unavailable" and info.value.status == HTTP_STATUS["unavailable"] == 503
    service.load()
    assert service.state is Lifecycle.READY

    async def go() -> None:
        texts = ["hello", "a longer passage about kimchi"]
        vectors, stats = await service.embed(EmbedCall(texts=texts, token_ids=None), _never)
        np.testing.assert_allclose(vectors, model.encode(texts), atol=1e-6)
        assert stats.texts == 2
        q, _ = await service.embed(EmbedCall(texts=["hi"], token_ids=None, kind="query", task="qa"), _never)
        np.testing.assert_allclose(q[0], model.encode_queries("hi", task="qa"), atol=1e-6)
        scores, _ = await service.similarity(SimilarityCall("hi", ["hi", "kimchi"], None, "passage"), _never)
        assert len(scores) == 2
        tokens = await service.tokens(["hi"], True, None, None)
        assert tokens[0][0]["special"] is True

    asyncio.run(go())
    service.drain()
    assert service.state is Lifecycle.DRAINING
    with pytest.raises(ApiError, match="shutting down"):
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
            await service.embed(EmbedCall(texts=[f"text {i}" for i in range(2000)], token_ids=None), gone_now)

    asyncio.run(go())
    assert service.queue is not None and service.queue.dropped_texts > 0
    service.close()


def test_failed_load_is_reported() -> None:
    def broken() -> Embedder:
        raise FileNotFoundError("no model here")

    service = InferenceService(broken, ServeOptions())
    service.load()
    assert service.state is Lifecycle.FAILED and "no model here" in (service.error or "")
    with pytest.raises(ApiError, match="failed to load"):
        service.ready()
