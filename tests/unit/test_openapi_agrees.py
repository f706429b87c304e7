"""The OpenAPI description and the request parsers agree field by field: every field a parser reads is in the
route's schema, and every schema field is read by the parser (recorded by a dict that notes each lookup)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from e5rt.server.openapi import Limits, openapi_spec
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


def _cohere_v2_schema(limits: Limits) -> dict[str, Any]:
    return openapi_spec("test", limits)["paths"]["/v2/embed"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]


def test_cohere_embed_schema_refuses_what_the_parser_refuses() -> None:
    """Bodies the parser or route refuses are not schema-valid either (schemathesis would call them rejected valid
    data): non-empty images, output_dimension past the width, or with a quantized type; quantized types only when
    every served embedder has a calibration."""
    validator = jsonschema.Draft202012Validator(_cohere_v2_schema(Limits(dim=8)))
    base = {"texts": ["a"], "input_type": "search_query"}
    assert validator.is_valid({**base, "embedding_types": ["int8", "ubinary"], "images": []})
    assert validator.is_valid({**base, "embedding_types": ["float", "base64"], "output_dimension": 4})
    for bad in (
        {"images": [None]},
        {"inputs": [{"content": []}]},
        {"output_dimension": 9},
        {"output_dimension": 4, "embedding_types": ["float", "int8"]},
    ):
        assert not validator.is_valid({**base, **bad}), bad
    uncalibrated = jsonschema.Draft202012Validator(_cohere_v2_schema(Limits(dim=8, quantized=False)))
    assert uncalibrated.is_valid({**base, "embedding_types": ["float", "base64"]})
    assert not uncalibrated.is_valid({**base, "embedding_types": ["int8"]})
