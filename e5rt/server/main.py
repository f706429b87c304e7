"""Run the server: uvicorn on one event loop, the model on the queue's worker thread.

SIGTERM or SIGINT: /health turns 503, the listener closes, requests in flight finish (up to the shutdown
timeout), the queue drains, and the process exits 0. A second SIGINT forces the exit.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from types import FrameType

from ..config import LoadOptions, ServeOptions, SourceOptions
from ..model import ModelBase
from .app import create_app
from .models import ModelEntry, ModelSet, model_entries
from .service import Lifecycle

log = logging.getLogger("e5rt.server")


def serve(
    models: Sequence[str] | Sequence[ModelEntry] | Callable[[], ModelBase],
    options: ServeOptions,
    load: LoadOptions | None = None,
    sources: SourceOptions | None = None,
    log_level: str = "info",
) -> int:
    """Serve models over HTTP until SIGTERM / SIGINT: sources as `e5rt serve` takes them (model directories,
    SOURCE@VARIANT, hub ids and checkpoints exported on first use, fake:DIM), loaded by the serving policy
    (e5rt.server.models.model_entries; load gives the variant, provider, threads), or ModelEntry / a loader for
    models built in Python."""
    import uvicorn

    if callable(models):
        entries = [ModelEntry(models)]
    elif all(isinstance(m, str) for m in models):
        entries = model_entries([str(m) for m in models], options, load, sources)
    else:
        entries = [m for m in models if isinstance(m, ModelEntry)]
    service = ModelSet(entries, options)
    app = create_app(service)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Not uvicorn's: it re-raises the signal after shutting down, so a clean drain would exit -15.
            service.drain()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level=log_level,
        log_config=None,  # e5rt.logs has set up the one stdout handler (text or JSON lines) uvicorn's loggers use
        access_log=False,  # e5rt logs its own access line (route, status, texts, tokens, ms; never the text)
        timeout_graceful_shutdown=int(options.shutdown_timeout_s),
        lifespan="off",
    )
    server = _Server(config)
    service.set_on_failed(lambda: setattr(server, "should_exit", True))
    service.start()
    try:
        server.run()
    finally:
        # uvicorn puts the default handlers back when it returns: a second SIGTERM during the queue's drain (a
        # supervisor repeating itself) would then kill the process with -15 after a clean shutdown. It is
        # already stopping, so SIGTERM is ignored from here; a second SIGINT still forces the exit.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        service.close()
    if service.state is Lifecycle.FAILED:
        return 1
    return 0
