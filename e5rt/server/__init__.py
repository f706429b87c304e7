"""`e5rt serve`: an OpenAI- and TEI-compatible embedding server with cross-request batching (server extra).

Nothing in the runtime imports this package; it fails at import naming the extra when its libraries are missing.
"""

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"e5rt serve needs the server extra: pip install 'e5rt[server]' ({exc})") from exc
