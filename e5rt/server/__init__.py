"""`e5rt serve`: an OpenAI- and TEI-compatible embedding server with cross-request batching (server extra).

Nothing in the runtime imports this package. The serving core (service.py) needs no HTTP framework; the HTTP
adapter (app.py) and the runner (main.py) fail at import naming the extra when Starlette or uvicorn is missing.
"""
