"""The OpenAPI description of the server's routes, and a self-contained /docs page (no CDN: works offline)."""

from __future__ import annotations

import copy
import html
import json
from dataclasses import dataclass
from typing import Any

from ..core.prompts import TASKS


@dataclass(frozen=True)
class Limits:
    """What the served models and options allow, for the constraints the spec states (the parsers enforce the
    same): items per request, vector width, token-id range, the chunk window; None leaves a bound out."""

    max_items: int | None = None
    dim: int | None = None  # the narrowest served embedder's width (dimensions <= dim)
    vocab: int | None = None  # token ids < vocab (the smallest served vocabulary)
    max_length: int | None = None  # token ids per input
    window: int | None = None  # overlap < window (max_length minus the special tokens)
    token_ids: bool = False  # /v1/embeddings takes token ids (--accept-token-ids)
    quantized: bool = True  # every served embedder has an output calibration (Cohere's int8 / binary types)


_NONBLANK = {"type": "string", "minLength": 1, "pattern": "\\S"}  # at least one non-space character


def _texts(limits: Limits) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "minItems": 1, **_max(limits.max_items)}


def _max(n: int | None, key: str = "maxItems") -> dict[str, Any]:
    return {} if n is None else {key: n}


def _input(limits: Limits) -> dict[str, Any]:
    """OpenAI's input: a string or strings, and (with --accept-token-ids) token ids, never both in one list."""
    shapes: list[dict[str, Any]] = [{"type": "string"}, _texts(limits)]
    if limits.token_ids:
        token = {"type": "integer", "minimum": 0, **_max(None if limits.vocab is None else limits.vocab - 1, "maximum")}
        row = {"type": "array", "items": token, "minItems": 1, **_max(limits.max_length)}
        shapes += [row, {"type": "array", "items": row, "minItems": 1, **_max(limits.max_items)}]
    return {"oneOf": shapes} if len(shapes) > 2 else {"anyOf": shapes}


def _e5() -> dict[str, Any]:
    return {
        "input_type": {"type": "string", "enum": ["query", "passage"], "default": "passage"},
        "task": {**_NONBLANK, "description": "a name from e5rt.TASKS or an instruction (instruct models, queries)"},
    }


def _long(limits: Limits) -> dict[str, Any]:
    return {
        "long_text": {
            "type": "string",
            "enum": ["truncate", "chunk"],
            "default": "truncate",
            "description": "chunk: embed a long text as windows combined by a token-weighted mean (usage counts "
            "them all)",
        },
        "overlap": {
            "type": "integer",
            "minimum": 0,
            **_max(None if limits.window is None else limits.window - 1, "maximum"),
            "default": 0,
            "description": "tokens shared by neighbouring windows (only with long_text=chunk)",
        },
        "truncation_direction": {
            "type": "string",
            "enum": ["Right", "Left", "right", "left"],
            "default": "Right",
            "description": "Left keeps the end of an over-length text",
        },
    }


# overlap > 0 only with long_text=chunk
_OVERLAP_NEEDS_CHUNK = {
    "if": {"properties": {"overlap": {"type": "integer", "minimum": 1}}, "required": ["overlap"]},
    "then": {"properties": {"long_text": {"const": "chunk"}}, "required": ["long_text"]},
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


def _post(
    summary: str,
    props: dict[str, Any],
    required: list[str],
    response: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    schema = {"type": "object", "properties": props, "required": required, **(extra or {})}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": response}}},
                "4XX": {"description": "invalid request", "content": {"application/json": {"schema": _ERROR}}},
                "413": {
                    "description": "an input past the model's max length with truncation off, or too many items",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "429": {"description": "queue full; see Retry-After"},
                "503": {"description": "loading or shutting down"},
            },
        }
    }


def _get(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": "ok"}}}}


def openapi_spec(version: str, limits: Limits | None = None) -> dict[str, Any]:
    """The spec; with limits (from the served models and options: /openapi.json's), every bound they set."""
    lim = limits or Limits()
    vectors = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    dimensions = {"type": "integer", "minimum": 1, **_max(lim.dim, "maximum")}
    tei_embed = _post(
        "TEI-compatible embeddings",
        {
            "inputs": {"anyOf": [{"type": "string"}, _texts(lim)]},
            "normalize": {"type": "boolean", "default": True},
            "truncate": {"type": "boolean"},
            "prompt_name": {
                "type": "string",
                "enum": ["query", "passage", "document", *TASKS],
                "description": "query, passage (document) or a task name",
            },
            "dimensions": dimensions,
            "encoding_format": {"type": "string", "enum": ["float"], "default": "float"},
            **_e5(),
            **_long(lim),
        },
        ["inputs"],
        vectors,
        _OVERLAP_NEEDS_CHUNK,
    )
    openai = _post(
        "OpenAI-compatible embeddings (token ids, the complete model input, only with --accept-token-ids)",
        {
            "input": _input(lim),
            "model": {"type": "string"},
            "encoding_format": {"type": "string", "enum": ["float", "base64"], "default": "float"},
            "dimensions": {**dimensions, "description": "first N values, re-normalized (E5 is not Matryoshka)"},
            "user": {"type": "string"},
            **_e5(),
            **_long(lim),
        },
        ["input"],
        {"type": "object"},
        # token ids are run as sent: chunking them is refused
        {"allOf": [_OVERLAP_NEEDS_CHUNK, _IDS_NOT_CHUNKED]} if lim.token_ids else _OVERLAP_NEEDS_CHUNK,
    )
    pair = {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}
    one_or_two = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2}
    predict_inputs = {
        "anyOf": [
            {"type": "string"},
            pair,
            {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, one_or_two]},
                "minItems": 1,
                **_max(lim.max_items),
            },
        ],
        "description": "a text, a [text, text] pair, or a list of texts, [text] and [text, text] pairs (a list "
        "of exactly two strings is one pair, as TEI reads it)",
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "e5rt", "version": version, "description": "E5 text embeddings on ONNX Runtime"},
        "paths": {
            "/v1/embeddings": openai,
            "/embed": tei_embed,
            "/": _root(tei_embed),
            "/similarity": _post(
                "cosine of a source sentence (embedded as a query) against sentences (passages by default)",
                {
                    "inputs": {
                        "type": "object",
                        "properties": {
                            "source_sentence": {"type": "string"},
                            "sentences": {
                                **_texts(lim),
                                **_max(None if lim.max_items is None else lim.max_items - 1),
                            },
                        },
                        "required": ["source_sentence", "sentences"],
                    },
                    **_e5(),
                },
                ["inputs"],
                {"type": "array", "items": {"type": "number"}},
            ),
            "/tokenize": _post(
                "tokens of each input, with ids, pieces and character spans; with the default special tokens the "
                "ids are the complete model input /v1/embeddings takes back",
                {
                    "inputs": {"anyOf": [{"type": "string"}, _texts(lim)]},
                    "add_special_tokens": {"type": "boolean", "default": True},
                    **_e5(),
                },
                ["inputs"],
                {"type": "array"},
            ),
            "/rerank": _post(
                "TEI rerank: the texts ordered by relevance to the query (a reranker model), best first",
                {
                    "query": {"type": "string"},
                    "texts": _texts(lim),
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
            "/v1/rerank": _cohere_rerank("Cohere / Jina-style rerank", lim),
            "/v2/rerank": _cohere_rerank("Cohere v2 rerank (as /v1/rerank)", lim),
            "/v2/embed": _cohere_embed(2, lim),
            "/v1/embed": _cohere_embed(1, lim),
            "/predict": _post(
                "TEI predict (a sequence classifier): every label's score, best first; a list of those for a list",
                {
                    "inputs": predict_inputs,
                    "raw_scores": {"type": "boolean", "default": False, "description": "the logits, not softmax"},
                    "truncate": {"type": "boolean", "description": "false: an input past max length is a 413"},
                    "truncation_direction": {"type": "string", "enum": ["Right", "right"], "default": "Right"},
                },
                ["inputs"],
                {
                    "anyOf": [
                        {"type": "array", "items": _PREDICTION},
                        {"type": "array", "items": {"type": "array", "items": _PREDICTION}},
                    ]
                },
            ),
            "/v1/models": _get("the served models, each with its task (embed, rerank or classify)"),
            "/info": _get("model, dimensions, variant, provider, batch invariance, limits, version"),
            "/health": _get("200 once the model is loaded and warmed up; 503 while loading or draining"),
            "/metrics": _get("Prometheus metrics"),
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _root(tei_embed: dict[str, Any]) -> dict[str, Any]:
    """TEI's POST /: the first model's task decides. The body is /embed's (an embedder), /rerank's (a reranker) or
    /predict's (a classifier, answered as a list of lists: the Inference API's shape huggingface_hub reads)."""
    op = copy.deepcopy(tei_embed["post"])
    op["summary"] = "TEI's root route: /embed for an embedding model, /rerank for a reranker, /predict for a classifier"
    ok = op["responses"]["200"]["content"]["application/json"]
    ok["schema"] = {
        "anyOf": [
            ok["schema"],
            {"type": "array", "items": {"type": "object"}},
            {"type": "array", "items": {"type": "array", "items": _PREDICTION}},
        ]
    }
    return {"post": op}


_PREDICTION = {
    "type": "object",
    "properties": {"score": {"type": "number"}, "label": {"type": "string"}},
    "required": ["score", "label"],
}
# token-id input (a list of ints or of int lists) with long_text=chunk is refused
_IDS_NOT_CHUNKED = {
    "if": {
        "properties": {"input": {"type": "array", "items": {"not": {"type": "string"}}}},
        "required": ["input"],
    },
    "then": {"properties": {"long_text": {"const": "truncate"}}},
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


def _cohere_embed(version: int, lim: Limits) -> dict[str, Any]:
    """Cohere's embed API (cohere.ClientV2.embed posts to /v2/embed, cohere.Client.embed to /v1/embed)."""
    plain = ["float", "base64"]
    types = plain + (["int8", "uint8", "binary", "ubinary"] if lim.quantized else [])
    props: dict[str, Any] = {
        "model": {"type": "string"},
        "texts": {**_texts(lim), "description": "the texts to embed"},
        "input_type": {
            "type": "string",
            "enum": ["search_document", "search_query", "classification", "clustering"],
            "description": "search_document: E5 passage; search_query: query; classification / clustering: a "
            "query with that E5 instruction" + ("" if version == 2 else " (default search_document)"),
        },
        "embedding_types": {
            "type": "array",
            "items": {"type": "string", "enum": types},
            "minItems": 1,
            "description": "int8 / uint8 / binary / ubinary by the model's export-time calibration (per-dimension "
            "ranges and median thresholds); base64: the float32 bytes, little-endian"
            + ("" if version == 2 else "; without it the answer is embeddings_floats"),
        },
        "truncate": {"type": "string", "enum": ["NONE", "START", "END"], "default": "END"},
        # Cohere's clients may send these empty; anything in them is refused, so the spec allows only [].
        "images": {"type": "array", "maxItems": 0, "description": "not served (a text embedder): must be empty"},
        "inputs": {"type": "array", "maxItems": 0, "description": "not served (a text embedder): must be empty"},
    }
    if version == 2:
        props["output_dimension"] = {
            "type": "integer",
            "minimum": 1,
            **_max(lim.dim, "maximum"),
            "description": "first N values, re-normalized",
        }
        props["max_tokens"] = {"type": "integer", "minimum": 3, "description": "cut each text at N tokens"}
    required = ["texts", "input_type"] if version == 2 else ["texts"]
    # The calibration is of full-width vectors: a shortened one comes only as float / base64 (the parser refuses
    # the rest; stated here for every output_dimension, though the full width itself is also let through).
    plain_only = {
        "if": {"required": ["output_dimension"]},
        "then": {"properties": {"embedding_types": {"items": {"enum": plain}}}},
    }
    return _post(
        f"Cohere embed v{version}: {{id, embeddings, texts, meta}}; errors carry Cohere's top-level 'message'",
        props,
        required,
        {"type": "object"},
        plain_only if version == 2 else None,
    )


def _cohere_rerank(what: str, lim: Limits) -> dict[str, Any]:
    """The Cohere-style rerank route's spec (/v1/rerank and cohere.ClientV2's /v2/rerank share it)."""
    return _post(
        f"{what}: results with index and relevance_score (sigmoid), best first",
        {
            "model": {"type": "string"},
            "query": {"type": "string"},
            "documents": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
                    ]
                },
                "minItems": 1,
                **_max(lim.max_items),
                "description": "strings, or objects with a 'text' string",
            },
            "top_n": {"type": "integer", "minimum": 1},
            "return_documents": {"type": "boolean", "default": False},
        },
        ["query", "documents"],
        {"type": "object"},
    )
