"""`e5rt serve`'s ASGI app in the test's own process: the same app, model set and queue the server runs, reached
through Starlette's TestClient instead of a socket. For protocol checks that a process of its own would not
change (routes, bodies, errors); the socket, signals and overload stay with tests/e2e/test_server.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from e5rt.config import ServeOptions
from e5rt.server.app import create_app
from e5rt.server.models import ModelSet, model_entries


@contextmanager
def app_client(sources: Sequence[str], **options: Any) -> Iterator[Any]:
    """A TestClient on the app serving sources (fake:DIM needs no files), started and closed around the block."""
    from starlette.testclient import TestClient

    opts = ServeOptions(**options)
    models = ModelSet(model_entries(list(sources), opts, log_progress=False), opts)
    for loading in models.start():  # the load thread ends once the model serves (or has failed)
        loading.join(timeout=120)
    try:
        with TestClient(create_app(models), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        models.close()
