"""The probe texts every exported variant is checked on: 64+ texts, 8+ languages, one word to max length."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_SHORT = [
    "hello",
    "서울",
    "東京",
    "Привет",
    "مرحبا",
    "नमस्ते",
    "สวัสดี",
    "Hola",
    "Bonjour",
    "Haus",
    "人工智能",
    "AI",
    "Ελληνικά",
    "",
]

_SENTENCES = [
    # Korean (the seed article's sentences)
    "인공지능 기술은 현대 사회에 큰 영향을 미치고 있습니다.",
    "머신러닝은 데이터 기반 의사결정에 도움을 줍니다.",
    "안녕하세요, 잘 부탁드립니다.",
    "AI 윤리 문제점에 대해 알려주세요",
    "자율주행 자동차의 안전성 평가 방법론",
    "딥러닝 모델의 해석 가능성 향상 기법",
    # English
    "Artificial intelligence technology has a significant impact on modern society.",
    "The future development of AI technology",
    "Safety testing for autonomous vehicles",
    "How much protein should a female eat per day?",
    "The quick brown fox jumps over the lazy dog.",
    # French, German, Spanish, Portuguese, Italian
    "L'avenir du développement de la technologie d'IA",
    "Die Sicherheit autonomer Fahrzeuge wird in umfangreichen Tests geprüft.",
    "¿Cuál es la capital de Francia? La capital de Francia es París.",
    "O aprendizado de máquina ajuda na tomada de decisões baseada em dados.",
    "La ricerca scientifica richiede pazienza e metodo.",
    # Japanese, Chinese
    "機械学習はデータに基づく意思決定を支援します。",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "人工智能技术对现代社会产生了重大影响。",
    "自然语言处理技术的发展与应用案例",
    # Russian, Arabic, Hindi, Thai, Turkish, Vietnamese
    "Машинное обучение помогает принимать решения на основе данных.",
    "الذكاء الاصطناعي له تأثير كبير على المجتمع الحديث.",
    "कृत्रिम बुद्धिमत्ता आधुनिक समाज पर बड़ा प्रभाव डालती है।",
    "ปัญญาประดิษฐ์มีผลกระทบอย่างมากต่อสังคมสมัยใหม่",
    "Yapay zeka modern toplum üzerinde büyük bir etkiye sahiptir.",
    "Trí tuệ nhân tạo có ảnh hưởng lớn đến xã hội hiện đại.",
    # Mixed scripts, numbers, code, emoji, whitespace
    "GPU 메모리 80GB, batch size 32, 지연 시간 1.2ms",
    "def mean_pool(h, m): return (h * m).sum(1) / m.sum(1)",
    "🚀 Launch day! 🎉 출시일입니다 🎉",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ｃｈａｒａｃｔｅｒｓ　ａｎｄ　ｄｉｇｉｔｓ　１２３",
    "tabs\tbetween\twords   and   runs of spaces",
    "https://example.com/search?q=multilingual+e5&lang=ko",
]

_NEWLINES = [
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: AI 윤리 문제점",
    "Instruct: Retrieve semantically similar text.\nQuery: 인공지능 기술의 발전 방향",
    "Instruct: Retrieve parallel sentences.\nQuery: The future development of AI technology",
    "query: how to make kimchi",
    "passage: Kimchi is a traditional Korean side dish of salted and fermented vegetables.",
    "first line\nsecond line\n\nfourth line after a blank one",
    "제목: 임베딩\n본문: 문장 임베딩은 문장 전체의 의미를 담은 고정 크기의 벡터 표현입니다.",
    "Line one.\r\nLine two with Windows line ending.",
]

_PARAGRAPHS = [
    "SBERT는 각 문장을 독립적으로 임베딩 벡터로 변환하고, 생성된 임베딩 간 코사인 유사도를 통해 효율적으로 문장을 "
    "비교합니다. 의미적 검색, 클러스터링, 의미적 유사도 계산 등에 최적화되어 있습니다.",
    "Text embeddings map sentences into a vector space where semantically similar sentences lie close together. "
    "They power semantic search, clustering, deduplication and retrieval-augmented generation, and a good "
    "multilingual model places a Korean sentence and its English translation next to each other.",
    "Les plongements de phrases permettent de comparer des textes dans différentes langues. Un modèle multilingue "
    "bien entraîné rapproche une phrase coréenne de sa traduction anglaise, ce qui facilite la recherche.",
    "多言語埋め込みモデルは、異なる言語で書かれた同じ意味の文を近いベクトルに写像します。これにより、"
    "日本語の質問で英語の文書を検索することができます。",
    "Многоязычные модели эмбеддингов отображают предложения с одинаковым смыслом на разных языках в близкие "
    "векторы, что позволяет искать документы на английском языке по запросу на русском.",
    "يمكن لنماذج التضمين متعددة اللغات أن تضع الجمل ذات المعنى نفسه بلغات مختلفة في مواضع متقاربة، مما يتيح "
    "البحث في المستندات الإنجليزية باستخدام استعلام باللغة العربية.",
]


def _long_texts() -> list[str]:
    """Texts around and past 512 tokens, so truncation at max length is exercised."""
    ko = " ".join(_SENTENCES[:6])
    en = " ".join(_SENTENCES[6:11])
    mixed = " ".join(_SENTENCES)
    return [
        " ".join([ko] * 6),
        " ".join([en] * 8),
        " ".join([mixed] * 3),
        "\n".join(_PARAGRAPHS * 3),
        " ".join(["word"] * 700),
    ]


def probe_texts() -> list[str]:
    """The fixed probe set (deterministic, no randomness)."""
    texts = _SHORT + _SENTENCES + _NEWLINES + _PARAGRAPHS + _long_texts()
    return texts


def probe_pairs() -> list[tuple[str, str]]:
    """The fixed (query, document) probe set for rerank exports: short and sentence queries in several languages
    against documents from one word to past max length (the document is what truncation cuts), the empty
    document included, each query against related and unrelated documents."""
    queries = [*_SHORT[:4], *_SENTENCES[3:5], *_SENTENCES[6:9], *_SENTENCES[-3:]]
    documents = [*_SENTENCES, *_PARAGRAPHS, *_long_texts(), "", _SHORT[0]]
    # every query meets a spread of documents; deterministic: document k goes with query k mod len(queries)
    pairs = [(queries[k % len(queries)], doc) for k, doc in enumerate(documents)]
    pairs += [(q, documents[(3 * k + 1) % len(documents)]) for k, q in enumerate(queries)]
    return pairs


def tokenizer_texts() -> list[str]:
    """Texts a compact tokenizer must encode exactly as tokenizer.json does, beyond the probes: leading, trailing
    and lone whitespace of every kind the normalizer maps to a space, special tokens written in the text, control
    and zero-width characters, combining marks, ligatures, emoji sequences, unknown characters."""
    edges = [
        "hello ",
        " hello",
        " ",
        "  ",
        "   x   ",
        "a\t",
        "x\n",
        "\r\n",
        "\t\tlead",
        "trail\u3000",
        "\u3000",
        "a\u00a0",
        "\u200b",
        "zero\u200bwidth",
        "\u00ad",
        "a\u00ad",
        "a \u00ad",
        "\x00ctrl\x01",
        "e\u0301",
        "\ufb01 ligature",
        "\u2460\u2461",
        "\u216b",
        "\U0001d518\U0001d52b",
        "\U0001f600\U0001f600 \U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
        "\U0001f9ff\U0001fae0",
        "<s>",
        "</s>",
        "<s> hi </s>",
        "a <mask> b",
        "a<mask>b",
        "x <unk> y",
        "<pad><pad>",
        "<s><s>",
        " <mask> ",
        "<mask>  trailing  ",
        "not <special> tokens < s >",
        "a  \n  b",
        "\n\n\n",
    ]
    return edges + [text + " " for text in _SENTENCES[:6]] + [" " + text for text in _SENTENCES[6:12]]


def corpus_rows() -> list[dict[str, Any]]:
    """Every row of e5rt's benchmark corpus (2,048 texts, 15+ languages, with their kind), in file order."""
    import e5rt

    path = Path(e5rt.__file__).parent / "bench" / "data" / "corpus.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus_texts() -> list[str]:
    """Every text of e5rt's benchmark corpus, in file order."""
    return [r["text"] for r in corpus_rows()]


# Texts the output calibration (per-dimension int8 ranges and bit thresholds) is measured on; the quality
# benchmark found retrieval quality flat from a few dozen texts on (benchmarks/quantized_quality.py).
OUTPUT_CALIBRATION_TEXTS = 1024


def output_calibration_texts(n: int = OUTPUT_CALIBRATION_TEXTS) -> tuple[list[str], list[str]]:
    """n rows spread evenly over the benchmark corpus (15+ languages) as (queries, passages): its search
    queries, and its sentences, paragraphs and long documents."""
    rows = corpus_rows()
    rows = rows[:: max(1, len(rows) // n)][:n]
    return [r["text"] for r in rows if r.get("kind") == "query"], [r["text"] for r in rows if r.get("kind") != "query"]
