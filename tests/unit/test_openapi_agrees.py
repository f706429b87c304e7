"""The OpenAPI description and the request parsers agree field by field: every field a parser reads is in the
route's schema, and every schema field is read by the parser (recorded by a dict that notes each lookup)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from e5rt.server.openapi import openapi_spec
from e5rt.server.protocol import (
    parse_cohere_embed,
    parse_cohere_rerank,
    parse_openai,
    parse_similarity,
    parse_tei_embed,
    parse_tei_rerank,
    parse_tokenize,
)


class Recording(dict[str, Any]):
    """A request body that remembers which keys the parser looked up."""

    def __init__(self, *args: Any, seen: set[str], prefix: str = "") -> None:
        super().__init__(*args)
        self.seen, self.prefix = seen, prefix

    def _note(self, key: object) -> None:
        self.seen.add(self.prefix + str(key))

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self._note(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)


def _schema_fields(path: str) -> set[str]:
    schema = openapi_spec("test")["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    out = set()
    for name, prop in schema["properties"].items():
        out.add(name)
        for inner in prop.get("properties", {}):
            out.add(f"{name}.{inner}")
    return out


ROUTES: dict[str, tuple[Callable[[Any], object], dict[str, Any]]] = {
    "/v1/embeddings": (lambda b: parse_openai(b, 8, 16, True, True), {"input": ["a"]}),
    "/embed": (lambda b: parse_tei_embed(b, 8, 16, True), {"inputs": ["a"]}),
    "/": (lambda b: parse_tei_embed(b, 8, 16, True), {"inputs": ["a"]}),
    "/similarity": (lambda b: parse_similarity(b, 16), {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
    "/tokenize": (lambda b: parse_tokenize(b, 16), {"inputs": ["a"], "input_type": "query"}),
    "/rerank": (lambda b: parse_tei_rerank(b, 16, True), {"query": "q", "texts": ["a"]}),
    "/v1/rerank": (lambda b: parse_cohere_rerank(b, 16), {"query": "q", "documents": ["a"]}),
    "/v2/rerank": (lambda b: parse_cohere_rerank(b, 16), {"query": "q", "documents": ["a"]}),
    "/v2/embed": (lambda b: parse_cohere_embed(b, 8, 16, 2), {"texts": ["a"], "input_type": "search_query"}),
    "/v1/embed": (lambda b: parse_cohere_embed(b, 8, 16, 1), {"texts": ["a"]}),
}


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_parser_reads_exactly_the_schema_fields(path: str) -> None:
    parse, body = ROUTES[path]
    seen: set[str] = set()
    wrapped = Recording(
        {k: Recording(v, seen=seen, prefix=f"{k}.") if isinstance(v, dict) else v for k, v in body.items()},
        seen=seen,
    )
    parse(wrapped)
    assert seen == _schema_fields(path), path
