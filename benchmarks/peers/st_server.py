"""What a user writes by hand: sentence-transformers behind a minimal FastAPI app (the load benchmark's peer).

    python benchmarks/peers/st_server.py --model CHECKPOINT_DIR --port 8081 --threads 2

A plain `def` route (FastAPI runs it on its thread pool, so the event loop is not blocked), one
model.encode per request, no batching across requests.
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer


class EmbeddingRequest(BaseModel):
    input: str | list[str]
    model: str | None = None


def build(model_dir: str) -> FastAPI:
    model = SentenceTransformer(model_dir, device="cpu")
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/embeddings")
    def embeddings(req: EmbeddingRequest) -> dict[str, object]:
        texts = [req.input] if isinstance(req.input, str) else req.input
        vecs = model.encode(texts, batch_size=32, normalize_embeddings=True)
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": v.tolist(), "index": i} for i, v in enumerate(vecs)],
            "model": req.model or "st",
        }

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, log_level="warning")
