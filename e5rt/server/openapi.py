"""The OpenAPI description of the server's routes, and a self-contained /docs page (no CDN: works offline)."""

from __future__ import annotations

import html
import json
from typing import Any

_INPUT = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
    ]
}
_E5 = {
    "input_type": {"type": "string", "enum": ["query", "passage"], "default": "passage"},
    "task": {"type": "string", "description": "a name from e5rt.TASKS or free text (instruct models, queries)"},
}
_LONG = {
    "long_text": {
        "type": "string",
        "enum": ["truncate", "chunk"],
        "default": "truncate",
        "description": "chunk: embed a long text as windows combined by a token-weighted mean (usage counts them all)",
    },
    "overlap": {"type": "integer", "default": 0, "description": "tokens shared by neighbouring windows (chunk)"},
    "truncation_direction": {
        "type": "string",
        "enum": ["Right", "Left", "right", "left"],
        "default": "Right",
        "description": "Left keeps the end of an over-length text",
    },
}
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {k: {"type": ["string", "null"]} for k in ("message", "type", "param", "code")},
        }
    },
}


def _post(summary: str, props: dict[str, Any], required: list[str], response: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": props, "required": required}}
                },
            },
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": response}}},
                "4XX": {"description": "invalid request", "content": {"application/json": {"schema": _ERROR}}},
                "429": {"description": "queue full; see Retry-After"},
                "503": {"description": "loading or shutting down"},
            },
        }
    }


def _get(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": "ok"}}}}


def openapi_spec(version: str) -> dict[str, Any]:
    vectors = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    tei_embed = _post(
        "TEI-compatible embeddings",
        {
            "inputs": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "normalize": {"type": "boolean", "default": True},
            "truncate": {"type": "boolean"},
            "prompt_name": {"type": "string", "description": "query, passage (document) or a task name"},
            "dimensions": {"type": "integer"},
            "encoding_format": {"type": "string", "enum": ["float"], "default": "float"},
            **_E5,
            **_LONG,
        },
        ["inputs"],
        vectors,
    )
    openai = _post(
        "OpenAI-compatible embeddings (token-id input only with --accept-token-ids)",
        {
            "input": _INPUT,
            "model": {"type": "string"},
            "encoding_format": {"type": "string", "enum": ["float", "base64"], "default": "float"},
            "dimensions": {"type": "integer", "description": "first N values, re-normalized (E5 is not Matryoshka)"},
            "user": {"type": "string"},
            **_E5,
            **_LONG,
        },
        ["input"],
        {"type": "object"},
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "e5rt", "version": version, "description": "E5 text embeddings on ONNX Runtime"},
        "paths": {
            "/v1/embeddings": openai,
            "/embed": tei_embed,
            "/": {
                "post": {
                    **tei_embed["post"],
                    "summary": "TEI's root route: /embed for an embedding model, /rerank for a reranker",
                }
            },
            "/similarity": _post(
                "cosine of a source sentence (embedded as a query) against sentences (passages by default)",
                {
                    "inputs": {
                        "type": "object",
                        "properties": {"source_sentence": {"type": "string"}, "sentences": {"type": "array"}},
                    },
                    **_E5,
                },
                ["inputs"],
                {"type": "array", "items": {"type": "number"}},
            ),
            "/tokenize": _post(
                "tokens of each input, with ids, pieces and character spans",
                {
                    "inputs": {"oneOf": [{"type": "string"}, {"type": "array"}]},
                    "add_special_tokens": {"type": "boolean", "default": True},
                    **_E5,
                },
                ["inputs"],
                {"type": "array"},
            ),
            "/rerank": _post(
                "TEI rerank: the texts ordered by relevance to the query (a reranker model), best first",
                {
                    "query": {"type": "string"},
                    "texts": {"type": "array", "items": {"type": "string"}},
                    "raw_scores": {"type": "boolean", "default": False, "description": "the logit, not its sigmoid"},
                    "return_text": {"type": "boolean", "default": False},
                    "truncate": {"type": "boolean", "description": "false: a pair past max length is a 413"},
                    "truncation_direction": {
                        "type": "string",
                        "enum": ["Right", "right"],
                        "default": "Right",
                        "description": "the document's end is cut, never the query",
                    },
                },
                ["query", "texts"],
                {"type": "array", "items": {"type": "object"}},
            ),
            "/v1/rerank": _cohere_rerank("Cohere / Jina-style rerank"),
            "/v2/rerank": _cohere_rerank("Cohere v2 rerank (as /v1/rerank)"),
            "/v1/models": _get("the served models, each with its task (embed or rerank)"),
            "/info": _get("model, dimensions, variant, provider, batch invariance, limits, version"),
            "/health": _get("200 once the model is loaded and warmed up; 503 while loading or draining"),
            "/metrics": _get("Prometheus metrics"),
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def docs_html(spec: dict[str, Any]) -> str:
    rows = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            fields = ", ".join(schema.get("properties", {}))
            rows.append(
                f"<tr><td><code>{method.upper()} {html.escape(path)}</code></td><td>{html.escape(op['summary'])}</td>"
                f"<td><code>{html.escape(fields)}</code></td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>e5rt API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:4px 10px;border-bottom:1px solid #ddd}</style>"
        f"</head><body><h1>e5rt {html.escape(spec['info']['version'])}</h1><table>{''.join(rows)}</table>"
        '<p>Errors: <code>{"error": {"message", "type", "param", "code"}}</code>. '
        "Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>"
        f"<details><summary>OpenAPI</summary><pre>{html.escape(json.dumps(spec, indent=1))}</pre></details>"
        "</body></html>"
    )


def _cohere_rerank(what: str) -> dict[str, Any]:
    """The Cohere-style rerank route's spec (/v1/rerank and cohere.ClientV2's /v2/rerank share it)."""
    return _post(
        f"{what}: results with index and relevance_score (sigmoid), best first",
        {
            "model": {"type": "string"},
            "query": {"type": "string"},
            "documents": {
                "type": "array",
                "items": {"oneOf": [{"type": "string"}, {"type": "object"}]},
                "description": "strings, or objects with a 'text' string",
            },
            "top_n": {"type": "integer"},
            "return_documents": {"type": "boolean", "default": False},
        },
        ["query", "documents"],
        {"type": "object"},
    )
