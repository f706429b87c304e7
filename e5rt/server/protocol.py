"""Request bodies in, response bodies out: OpenAI's /v1/embeddings, TEI's /embed, /rerank, /predict, /similarity
and /tokenize, Cohere's /v1/rerank.

Pure functions on decoded JSON, so every rule (types, limits, which status) is testable without a server.
Every failure is an ApiError carrying its HTTP status and OpenAI's error shape.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..core.prompts import TextKind
from ..core.tokenize import Direction
from ..errors import HTTP_STATUS, E5rtError, ErrorKind, InvalidInputError, kind_of
from ..rerank import RerankResult

Encoding = Literal["float", "base64"]
LongText = Literal["truncate", "chunk"]
# Token ids are embedded as this model's own; ids from another tokenizer would silently embed another text.
TOKEN_IDS_REFUSED = (
    "'input' holds token ids, and this server embeds token ids only when they come from this model's own "
    "tokenizer: ids from another one (LangChain's OpenAIEmbeddings sends OpenAI tiktoken ids by default) would "
    "give the vector of an unrelated text. Send the texts instead; with LangChain use "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False). If the ids do come from this model (e.g. from "
    "/tokenize), start the server with --accept-token-ids (E5RT_ACCEPT_TOKEN_IDS=1)."
)
# OpenAI's error "type" for each status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class ApiError(E5rtError):
    """An error in a request, with OpenAI's body: {"error": {"message", "type", "param", "code"}}. Its kind
    picks the HTTP status, through e5rt.errors.HTTP_STATUS like every other error (never a status of its own);
    the adapter adds the headers a status needs (Retry-After, WWW-Authenticate, Allow)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        param: str | None = None,
        code: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code
        self.cause = cause  # the e5rt error it stands for, if any (its retry_after, its served kind)

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.kind]

    def body(self) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    @classmethod
    def from_exception(cls, exc: BaseException) -> ApiError:
        """Any exception as an ApiError: its kind (e5rt.errors.kind_of) picks the status."""
        if isinstance(exc, ApiError):
            return exc
        kind = kind_of(exc)
        message = str(exc) if isinstance(exc, E5rtError) else "internal error; see the server log"
        param = exc.param if isinstance(exc, InvalidInputError) else None
        code = (exc.code if isinstance(exc, E5rtError) else None) or kind
        return cls(kind, message, param=param, code=code, cause=exc)


# --- decoding ----------------------------------------------------------------------------------------------
def decode_json(raw: bytes) -> Any:
    """The body as JSON, or a 400 naming what is wrong with it (never an exception of another type)."""
    if not raw.strip():
        raise ApiError("malformed", "the request body is empty; send a JSON object", code="empty_body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            "malformed", f"the request body is not valid UTF-8 (byte {exc.start})", code="invalid_utf8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            "malformed", f"the request body is not valid JSON ({exc.msg} at {exc.pos})", code="invalid_json"
        ) from exc
    except (RecursionError, ValueError) as exc:  # nesting too deep; an integer literal with thousands of digits
        message = f"the request body cannot be decoded ({type(exc).__name__})"
        raise ApiError("malformed", message, code="invalid_json") from exc


def _invalid_value(param: str, message: str) -> ApiError:
    """A field with a value outside what it accepts."""
    return ApiError("invalid_input", message, param=param, code="invalid_value")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(
            "invalid_input", f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_body"
        )
    return body


def _integral(value: Any) -> Any:
    """JSON Schema's integer: 3 and 3.0 alike (a float with no fraction is an integer there); others unchanged."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if int in kinds:
        value = _integral(value)
    if isinstance(value, bool) and bool not in kinds:
        raise ApiError(
            "invalid_input", f"'{name}' must be {_names(kinds)}, got a boolean", param=name, code="invalid_type"
        )
    if not isinstance(value, kinds):
        raise ApiError(
            "invalid_input",
            f"'{name}' must be {_names(kinds)}, got {type(value).__name__}",
            param=name,
            code="invalid_type",
        )
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(
        {str: "a string", int: "an integer", bool: "a boolean", list: "a list"}.get(k, k.__name__) for k in kinds
    )


@dataclass(frozen=True)
class EmbedCall:
    """One embedding request, whichever route it came by."""

    texts: list[str] | None  # or
    token_ids: list[list[int]] | None
    kind: TextKind = "passage"
    instruction: str | None = None  # the E5 instruction (the body's "task")
    normalize: bool = True
    truncate: bool = True
    dimensions: int | None = None
    encoding: Encoding = "float"
    direction: Direction = "right"  # which end an over-length text loses (TEI's truncation_direction)
    long_text: LongText = "truncate"  # or "chunk": windows combined by a token-weighted mean
    overlap: int = 0  # tokens shared by neighbouring windows when chunking
    max_tokens: int | None = None  # cut at fewer tokens than the model's max_length (Cohere's max_tokens)


def _inputs(value: Any, name: str, max_batch: int) -> tuple[list[str] | None, list[list[int]] | None]:
    """str | [str] | [int] | [[int]] -> texts or token id lists (OpenAI's four input shapes)."""
    if isinstance(value, str):
        return [value], None
    if not isinstance(value, list):
        raise ApiError(
            "invalid_input",
            f"'{name}' must be a string, a list of strings, or token ids; got {type(value).__name__}",
            param=name,
            code="invalid_type",
        )
    _sized(value, name, max_batch, "text")
    if all(isinstance(v, str) for v in value):
        return list(value), None
    value = [[_integral(t) for t in v] if isinstance(v, list) else _integral(v) for v in value]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None, [_token_row(value, name)]
    if all(isinstance(v, list) for v in value):
        return None, [_token_row(row, f"{name}[{i}]") for i, row in enumerate(value)]
    raise ApiError(
        "invalid_input", f"'{name}' mixes types; send only strings, or only token ids", param=name, code="invalid_type"
    )


def _sized(value: list[Any], name: str, max_batch: int, what: str) -> None:
    """An empty list, or more items than a request may carry, is refused."""
    if not value:
        raise ApiError("invalid_input", f"'{name}' is empty; send at least one {what}", param=name, code="empty_input")
    if len(value) > max_batch:
        raise ApiError(
            "too_large",
            f"'{name}' holds {len(value)} items; this server takes at most {max_batch} per request "
            "(split the request, or raise --max-client-batch-size)",
            param=name,
            code="too_many_inputs",
        )


def _token_row(row: list[Any], name: str) -> list[int]:
    param = name.split("[")[0]
    if not row or not all(isinstance(t, int) and not isinstance(t, bool) for t in row):
        raise ApiError(
            "invalid_input",
            f"'{name}' must be a non-empty list of integer token ids",
            param=param,
            code="invalid_tokens",
        )
    if min(row) < 0 or max(row) >= 2**31:
        raise ApiError(
            "invalid_input", f"'{name}' holds a token id outside [0, 2^31)", param=param, code="invalid_tokens"
        )
    return list(row)


def _kind(body: dict[str, Any]) -> TextKind:
    kind = _field(body, "input_type", (str,), "passage")
    if kind not in ("query", "passage"):
        raise _invalid_value("input_type", f"'input_type' must be 'query' or 'passage', got {kind!r}")
    return "query" if kind == "query" else "passage"


def _task(body: dict[str, Any]) -> str | None:
    task: str | None = _field(body, "task", (str,))
    if task is not None and not task.strip():
        raise _invalid_value("task", "'task' is empty; give a name from e5rt.TASKS or an instruction")
    return task


def _dimensions(body: dict[str, Any], dim: int) -> int | None:
    value: int | None = _field(body, "dimensions", (int,))
    if value is not None and not 1 <= value <= dim:
        raise _invalid_value("dimensions", f"'dimensions' must be in [1, {dim}] for this model, got {value}")
    return value


def _direction(body: dict[str, Any]) -> Direction:
    value = _field(body, "truncation_direction", (str,), "right")
    low = value.lower()
    if low not in ("right", "left"):
        raise _invalid_value("truncation_direction", f"'truncation_direction' must be 'Right' or 'Left', got {value!r}")
    return "left" if low == "left" else "right"


def _long_text(body: dict[str, Any]) -> tuple[LongText, int]:
    mode = _field(body, "long_text", (str,), "truncate")
    if mode not in ("truncate", "chunk"):
        raise _invalid_value("long_text", f"'long_text' must be 'truncate' or 'chunk', got {mode!r}")
    overlap = _field(body, "overlap", (int,), 0)
    if overlap < 0:
        raise _invalid_value("overlap", f"'overlap' must be >= 0, got {overlap}")
    if overlap and mode != "chunk":
        raise _invalid_value("overlap", "'overlap' applies only with long_text='chunk'")
    return ("chunk" if mode == "chunk" else "truncate"), overlap


def parse_openai(body: Any, dim: int, max_batch: int, auto_truncate: bool, accept_token_ids: bool = False) -> EmbedCall:
    obj = _object(body)
    if "input" not in obj:
        raise ApiError("invalid_input", "missing field 'input'", param="input", code="missing_field")
    texts, ids = _inputs(obj["input"], "input", max_batch)
    if ids is not None and not accept_token_ids:
        raise ApiError("invalid_input", TOKEN_IDS_REFUSED, param="input", code="token_ids_not_accepted")
    encoding = _field(obj, "encoding_format", (str,), "float")
    if encoding not in ("float", "base64"):
        raise _invalid_value("encoding_format", f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
    _field(obj, "user", (str,))
    _field(obj, "model", (str,))  # checked, not used: one model is served under any name
    long_text, overlap = _long_text(obj)
    return EmbedCall(
        texts=texts,
        token_ids=ids,
        kind=_kind(obj),
        instruction=_task(obj),
        normalize=True,
        truncate=auto_truncate,
        dimensions=_dimensions(obj, dim),
        encoding=encoding,
        direction=_direction(obj),
        long_text=long_text,
        overlap=overlap,
    )


def parse_tei_embed(body: Any, dim: int, max_batch: int, auto_truncate: bool) -> EmbedCall:
    obj = _object(body)
    if "inputs" not in obj:
        raise ApiError("invalid_input", "missing field 'inputs'", param="inputs", code="missing_field")
    texts, ids = _inputs(obj["inputs"], "inputs", max_batch)
    if ids is not None:
        raise ApiError(
            "invalid_input", "'inputs' must be a string or a list of strings", param="inputs", code="invalid_type"
        )
    kind, task = _kind(obj), _task(obj)
    prompt = _field(obj, "prompt_name", (str,))
    if prompt is not None:
        # TEI picks a prompt by name; here the names are the E5 kinds and the task names of e5rt.TASKS.
        from ..core.prompts import TASKS

        if prompt in ("query", "passage", "document"):
            kind = "query" if prompt == "query" else "passage"
        elif prompt in TASKS:
            kind, task = "query", prompt
        else:
            raise _invalid_value(
                "prompt_name",
                f"unknown 'prompt_name' {prompt!r}; use query, passage (or document) or one of {', '.join(TASKS)}",
            )
    encoding = _field(obj, "encoding_format", (str,), "float")
    if encoding != "float":
        # huggingface_hub's feature_extraction parses the answer as a JSON array of floats, whatever it asked.
        raise _invalid_value(
            "encoding_format",
            f"'encoding_format' {encoding!r} is not served on this route (it answers JSON floats); "
            "use /v1/embeddings for base64",
        )
    long_text, overlap = _long_text(obj)
    return EmbedCall(
        texts=texts,
        token_ids=None,
        kind=kind,
        instruction=task,
        normalize=_field(obj, "normalize", (bool,), True),
        truncate=_field(obj, "truncate", (bool,), auto_truncate),
        dimensions=_dimensions(obj, dim),
        direction=_direction(obj),
        long_text=long_text,
        overlap=overlap,
    )


@dataclass(frozen=True)
class SimilarityCall:
    source: str
    sentences: list[str]
    instruction: str | None
    kind: TextKind


def parse_similarity(body: Any, max_batch: int) -> SimilarityCall:
    obj = _object(body)
    inputs = _object(obj.get("inputs")) if "inputs" in obj else None
    if inputs is None:
        raise ApiError(
            "invalid_input",
            "missing field 'inputs' ({'source_sentence': str, 'sentences': [str]})",
            param="inputs",
            code="missing_field",
        )
    source = _field(inputs, "source_sentence", (str,))
    if source is None:
        raise ApiError(
            "invalid_input",
            "missing field 'inputs.source_sentence'",
            param="inputs.source_sentence",
            code="missing_field",
        )
    texts, ids = _inputs(inputs.get("sentences"), "inputs.sentences", max_batch - 1)
    if texts is None or ids is not None:
        raise ApiError(
            "invalid_input",
            "'inputs.sentences' must be a list of strings",
            param="inputs.sentences",
            code="invalid_type",
        )
    return SimilarityCall(source=source, sentences=texts, instruction=_task(obj), kind=_kind(obj))


def parse_tokenize(body: Any, max_batch: int) -> tuple[list[str], bool, TextKind | None, str | None]:
    obj = _object(body)
    if "inputs" not in obj:
        raise ApiError("invalid_input", "missing field 'inputs'", param="inputs", code="missing_field")
    texts, ids = _inputs(obj["inputs"], "inputs", max_batch)
    if texts is None:
        raise ApiError(
            "invalid_input", "'inputs' must be a string or a list of strings", param="inputs", code="invalid_type"
        )
    kind = _kind(obj) if "input_type" in obj else None
    return texts, _field(obj, "add_special_tokens", (bool,), True), kind, _task(obj)


# --- encoding ----------------------------------------------------------------------------------------------
def encode_vector(vec: np.ndarray, encoding: Encoding) -> Any:
    """One vector as the response carries it: base64 of little-endian float32, or the float32 row itself, which
    the response encoder writes as JSON numbers (each the shortest text that reads back as the same float32)."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(vec, dtype=np.float32)


def openai_body(vectors: np.ndarray, encoding: Encoding, model: str, tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": encode_vector(v, encoding), "index": i} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# Cohere's embed API (POST /v2/embed, /v1/embed): its input types as E5 kinds and instructions, its embedding
# types as e5rt precisions (base64: the float32 bytes, little-endian, base64-encoded).
COHERE_INPUT_TYPES: dict[str, tuple[TextKind, str | None]] = {
    "search_document": ("passage", None),
    "search_query": ("query", None),
    "classification": ("query", "classification_topic"),
    "clustering": ("query", "clustering_topic"),
}
COHERE_EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")
_COHERE_TRUNCATE: dict[str, tuple[bool, Direction]] = {
    "NONE": (False, "right"),
    "START": (True, "left"),
    "END": (True, "right"),
}


@dataclass(frozen=True)
class CohereEmbedCall:
    call: EmbedCall
    types: tuple[str, ...]  # the embedding types asked for, in order, no repeats
    by_type: bool  # answer {type: [...]} (v2 always; v1 when embedding_types was sent)


def parse_cohere_embed(body: Any, dim: int, max_batch: int, version: int) -> CohereEmbedCall:
    """Cohere's POST /v2/embed (version 2) or /v1/embed (1): texts, model, input_type, embedding_types,
    truncate (NONE / START / END), and on v2 output_dimension and max_tokens. Images are not served."""
    obj = _object(body)
    for field_name in ("images", "inputs"):
        if obj.get(field_name):
            raise _invalid_value(field_name, f"'{field_name}' is not served: this is a text embedder; send 'texts'")
    if "texts" not in obj:
        raise ApiError("invalid_input", "missing field 'texts'", param="texts", code="missing_field")
    texts, ids = _inputs(obj["texts"], "texts", max_batch)
    if texts is None or ids is not None:
        raise ApiError("invalid_input", "'texts' must be a list of strings", param="texts", code="invalid_type")
    input_type = _field(obj, "input_type", (str,))
    if input_type is None:
        if version == 2:
            raise ApiError(
                "invalid_input",
                f"missing field 'input_type' (one of {', '.join(COHERE_INPUT_TYPES)})",
                param="input_type",
                code="missing_field",
            )
        input_type = "search_document"
    if input_type not in COHERE_INPUT_TYPES:
        raise _invalid_value(
            "input_type", f"'input_type' must be one of {', '.join(COHERE_INPUT_TYPES)}, got {input_type!r}"
        )
    kind, instruction = COHERE_INPUT_TYPES[input_type]
    raw_types = obj.get("embedding_types")
    if raw_types is None:
        types: tuple[str, ...] = ("float",)
    elif isinstance(raw_types, list) and raw_types and all(isinstance(t, str) for t in raw_types):
        unknown = [t for t in raw_types if t not in COHERE_EMBEDDING_TYPES]
        if unknown:
            raise _invalid_value(
                "embedding_types",
                f"unknown embedding type {unknown[0]!r}; use {', '.join(COHERE_EMBEDDING_TYPES)}",
            )
        types = tuple(dict.fromkeys(raw_types))
    else:
        raise _invalid_value("embedding_types", "'embedding_types' must be a non-empty list of strings")
    mode = str(_field(obj, "truncate", (str,), "END")).upper()
    if mode not in _COHERE_TRUNCATE:
        raise _invalid_value("truncate", f"'truncate' must be NONE, START or END, got {obj.get('truncate')!r}")
    truncate, direction = _COHERE_TRUNCATE[mode]
    dimensions = max_tokens = None
    if version == 2:
        dimensions = _field(obj, "output_dimension", (int,))
        if dimensions is not None and not 1 <= dimensions <= dim:
            raise _invalid_value("output_dimension", f"'output_dimension' must be in [1, {dim}], got {dimensions}")
        if dimensions == dim:
            dimensions = None
        max_tokens = _field(obj, "max_tokens", (int,))
        if max_tokens is not None and max_tokens < 3:
            raise _invalid_value("max_tokens", f"'max_tokens' must be at least 3, got {max_tokens}")
    _field(obj, "model", (str,))  # checked, not used: one model is served under any name
    call = EmbedCall(
        texts=texts,
        token_ids=None,
        kind=kind,
        instruction=instruction,
        truncate=truncate,
        direction=direction,
        dimensions=dimensions,
        max_tokens=max_tokens,
    )
    return CohereEmbedCall(call, types, by_type=version == 2 or raw_types is not None)


def cohere_embed_body(
    cohere: CohereEmbedCall, by_type: dict[str, Any], texts: list[str], tokens: int, version: int
) -> dict[str, Any]:
    """Cohere's embed answer: id, embeddings ({type: rows} or, on v1 without embedding_types, the float rows),
    texts, meta (api version, billed input tokens)."""
    import uuid

    meta = {"api_version": {"version": str(version)}, "billed_units": {"input_tokens": tokens}}
    if cohere.by_type:
        return {
            "response_type": "embeddings_by_type",
            "id": str(uuid.uuid4()),
            "embeddings": by_type,
            "texts": texts,
            "meta": meta,
        }
    return {
        "response_type": "embeddings_floats",
        "id": str(uuid.uuid4()),
        "embeddings": by_type["float"],
        "texts": texts,
        "meta": meta,
    }


@dataclass(frozen=True)
class RerankCall:
    """One rerank request, TEI's /rerank or the Cohere/Jina-style /v1/rerank."""

    query: str
    documents: list[str]
    raw_scores: bool = False  # the logit instead of its sigmoid
    return_documents: bool = False
    top_n: int | None = None
    truncate: bool = True  # False: a pair past max length is refused instead of its document cut
    model: str | None = None


def _documents(value: Any, name: str, max_batch: int) -> list[str]:
    """A list of documents: strings, or (Cohere / Jina) objects with a 'text' field."""
    if not isinstance(value, list):
        raise ApiError("invalid_input", f"'{name}' must be a list of strings", param=name, code="invalid_type")
    _sized(value, name, max_batch, "document")
    out = []
    for i, doc in enumerate(value):
        if isinstance(doc, dict) and isinstance(doc.get("text"), str):
            doc = doc["text"]
        if not isinstance(doc, str):
            raise ApiError(
                "invalid_input",
                f"'{name}[{i}]' must be a string (or an object with a 'text' string), got {type(doc).__name__}",
                param=name,
                code="invalid_type",
            )
        out.append(doc)
    return out


def _query(obj: dict[str, Any]) -> str:
    if "query" not in obj:
        raise ApiError("invalid_input", "missing field 'query'", param="query", code="missing_field")
    query = _field(obj, "query", (str,))
    if query is None:
        raise ApiError("invalid_input", "'query' must be a string", param="query", code="invalid_type")
    return str(query)


def parse_tei_rerank(body: Any, max_batch: int, auto_truncate: bool) -> RerankCall:
    """TEI's POST /rerank: query, texts, raw_scores, return_text, truncate, truncation_direction."""
    obj = _object(body)
    if "texts" not in obj:
        raise ApiError("invalid_input", "missing field 'texts'", param="texts", code="missing_field")
    if _direction(obj) != "right":
        raise _invalid_value(
            "truncation_direction", "a reranker cuts the document's end only ('Right'); the query is never cut"
        )
    return RerankCall(
        query=_query(obj),
        documents=_documents(obj["texts"], "texts", max_batch),
        raw_scores=_field(obj, "raw_scores", (bool,), False),
        return_documents=_field(obj, "return_text", (bool,), False),
        truncate=_field(obj, "truncate", (bool,), auto_truncate),
    )


def parse_cohere_rerank(body: Any, max_batch: int) -> RerankCall:
    """The Cohere / Jina-style POST /v1/rerank: model, query, documents (str or {text}), top_n, return_documents."""
    obj = _object(body)
    if "documents" not in obj:
        raise ApiError("invalid_input", "missing field 'documents'", param="documents", code="missing_field")
    top_n = _field(obj, "top_n", (int,))
    if top_n is not None and top_n < 1:
        raise _invalid_value("top_n", f"'top_n' must be a positive integer, got {top_n}")
    return RerankCall(
        query=_query(obj),
        documents=_documents(obj["documents"], "documents", max_batch),
        return_documents=_field(obj, "return_documents", (bool,), False),
        top_n=top_n,
        model=_field(obj, "model", (str,)),
    )


def tei_rerank_body(call: RerankCall, results: list[RerankResult]) -> list[dict[str, Any]]:
    return [
        {"index": r.index, "score": r.score, **({"text": r.document} if call.return_documents else {})} for r in results
    ]


def cohere_rerank_body(call: RerankCall, results: list[RerankResult], model: str, tokens: int) -> dict[str, Any]:
    import uuid

    return {
        "id": str(uuid.uuid4()),
        "model": model,
        "results": [
            {
                "index": r.index,
                "relevance_score": r.score,
                **({"document": {"text": r.document}} if call.return_documents else {}),
            }
            for r in results
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "meta": {"billed_units": {"search_units": 1}},
    }


@dataclass(frozen=True)
class PredictCall:
    """TEI's POST /predict: texts or (text, text) pairs, one or a list."""

    inputs: str | tuple[str, str] | list[str | tuple[str, str]]
    count: int  # inputs in the request
    chars: int
    raw_scores: bool = False
    truncate: bool = True


def parse_tei_predict(body: Any, max_batch: int, auto_truncate: bool) -> PredictCall:
    """inputs: a text, a [text, text] pair, or a list of texts, [text] and [text, text] pairs (TEI reads a
    list of exactly two strings as one pair; send [[a], [b]] for two texts); raw_scores; truncate."""
    obj = _object(body)
    if "inputs" not in obj:
        raise ApiError("invalid_input", "missing field 'inputs'", param="inputs", code="missing_field")
    if _direction(obj) != "right":
        raise _invalid_value("truncation_direction", "a classifier cuts its inputs' end only ('Right')")
    value = obj["inputs"]
    inputs: str | tuple[str, str] | list[str | tuple[str, str]]
    if isinstance(value, str):
        inputs, texts = value, [value]
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(x, str) for x in value):
        inputs, texts = (value[0], value[1]), list(value)
    elif isinstance(value, list):
        _sized(value, "inputs", max_batch, "input")
        items: list[str | tuple[str, str]] = []
        texts = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                items.append(item)
            elif isinstance(item, list) and 1 <= len(item) <= 2 and all(isinstance(x, str) for x in item):
                items.append(item[0] if len(item) == 1 else (item[0], item[1]))
            else:
                raise ApiError(
                    "invalid_input",
                    f"'inputs[{i}]' must be a string, [string] or a [string, string] pair",
                    param="inputs",
                    code="invalid_type",
                )
            texts.extend(item if isinstance(item, list) else [item])
        inputs = items
    else:
        raise ApiError(
            "invalid_input",
            f"'inputs' must be a string, a [string, string] pair, or a list of those; got {type(value).__name__}",
            param="inputs",
            code="invalid_type",
        )
    return PredictCall(
        inputs=inputs,
        count=len(inputs) if isinstance(inputs, list) else 1,
        chars=sum(map(len, texts)),
        raw_scores=_field(obj, "raw_scores", (bool,), False),
        truncate=_field(obj, "truncate", (bool,), auto_truncate),
    )


def predict_body(predictions: Any) -> Any:
    """[{"score", "label"}] best first for one input; a list of those for a list."""

    def one(row: list[Any]) -> list[dict[str, Any]]:
        return [{"score": p.score, "label": p.label} for p in row]

    if predictions and isinstance(predictions[0], list):
        return [one(row) for row in predictions]
    return one(predictions)
