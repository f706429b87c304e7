"""Prompt formatting for the E5 family.

instruct models (multilingual-e5-*-instruct) prefix only queries with a one-line task description;
e5 v1/v2 models prefix every text with 'query: ' or 'passage: '; plain sentence models take text as is.
"""

from __future__ import annotations

from typing import Literal

from ..errors import InvalidInputError

TextKind = Literal["query", "passage"]

# Task instructions used to train and evaluate the e5 instruct models, by short name.
TASKS: dict[str, str] = {
    "web_search": "Given a web search query, retrieve relevant passages that answer the query",
    "qa": "Given a question, retrieve passages that answer the question",
    "sts": "Retrieve semantically similar text.",
    "bitext": "Retrieve parallel sentences.",
    "summarization": "Given a news summary, retrieve other semantically similar summaries",
    "classification_sentiment": "Classify the sentiment expressed in the given text",
    "classification_intent": "Given a user utterance as query, find the user intents",
    "classification_topic": "Classify the given text into its topic category",
    "clustering_topic": "Identify the topic or theme of the given texts",
    "clustering_news": "Identify the main category of the given news articles",
    "duplicate_question": "Retrieve duplicate questions from the given question",
    "fact_check": "Given a claim, find documents that refute the claim",
}
DEFAULT_TASK = "web_search"


def resolve_task(task: str | None) -> str:
    """A short name from TASKS, or free text used verbatim; None means web-search retrieval."""
    if task is None:
        return TASKS[DEFAULT_TASK]
    if not isinstance(task, str) or not task.strip():
        raise InvalidInputError(f"task must be a non-empty string (a name from e5rt.TASKS or free text), got {task!r}")
    return TASKS.get(task, task)


def format_texts(
    texts: list[str], scheme: str, kind: TextKind, task: str | None = None, prompt: str | None = None
) -> list[str]:
    """Apply the model's prompt scheme to every text; an explicit prompt is put before each text instead
    (kind and task are then not used: sentence-transformers' prompt=..., or "" for the text as it is)."""
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a string, got {type(prompt).__name__}")
        return [prompt + t for t in texts]
    if kind not in ("query", "passage"):
        raise InvalidInputError(f"kind must be 'query' or 'passage', got {kind!r}")
    if scheme == "instruct":
        if kind == "passage":
            return list(texts)
        instruction = resolve_task(task)
        return [f"Instruct: {instruction}\nQuery: {t}" for t in texts]
    if scheme == "query-passage":
        prefix = "query: " if kind == "query" else "passage: "
        return [prefix + t for t in texts]
    if scheme == "none":
        return list(texts)
    raise InvalidInputError(f"unknown prompt scheme {scheme!r}; expected instruct, query-passage or none")
