"""One error tree. Every error e5rt raises on purpose derives from E5rtError and belongs to one kind.

The kind says what went wrong from the caller's side, so interfaces map it once: the CLI to an exit status,
the server to an HTTP status (``HTTP_STATUS``). Specific classes keep their builtin bases (ValueError,
TypeError) where callers already caught those.
"""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal[
    "invalid_input",
    "malformed",
    "too_large",
    "unauthorized",
    "unsupported_media",
    "not_found",
    "bad_method",
    "unavailable",
    "overloaded",
    "integrity",
    "internal",
]

# The one place an error kind becomes an HTTP status.
HTTP_STATUS: dict[str, int] = {
    "invalid_input": 422,  # well-formed, but not something e5rt can use
    "malformed": 400,  # not decodable (empty body, bad UTF-8 or JSON)
    "too_large": 413,  # more than a limit allows (texts per request, bytes, tokens with truncation off)
    "unauthorized": 401,
    "unsupported_media": 415,
    "not_found": 404,
    "bad_method": 405,
    "unavailable": 503,
    "overloaded": 429,
    "integrity": 500,
    "internal": 500,
}
# Kinds that are the caller's to fix (the CLI exits 2 for these, 1 for the rest).
CALLER_KINDS = frozenset(k for k, status in HTTP_STATUS.items() if 400 <= status < 500 and k != "overloaded")


class E5rtError(Exception):
    """Base class for errors raised by e5rt. ``code`` is a stable machine-readable name an interface may show
    (the server's error body); None means the kind itself."""

    kind: ErrorKind = "internal"
    code: str | None = None


# --- the five kinds ------------------------------------------------------------------------------------------
class InvalidInputError(E5rtError, ValueError):
    """The caller sent something e5rt cannot use: fix the input or the option. ``param`` names the parameter
    at fault where there is one (an interface translates it: the CLI to its flag)."""

    kind: ErrorKind = "invalid_input"

    def __init__(self, message: str = "", param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnavailableError(E5rtError):
    """A resource e5rt needs is missing or not reachable now (a provider, a file, a network, the service).
    ``retry_after``: seconds after which trying again may succeed, where that is known."""

    kind: ErrorKind = "unavailable"
    retry_after: float | None = None


class OverloadedError(E5rtError):
    """Too much work is queued; retry after ``retry_after`` seconds."""

    kind: ErrorKind = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IntegrityError(E5rtError):
    """Data on disk is damaged or inconsistent: a file's size or sha256 differs from the manifest, a parity
    check failed."""

    kind: ErrorKind = "integrity"


class InternalError(E5rtError):
    """A failure inside e5rt or the inference library that no input should cause (a bug: please report it)."""

    kind: ErrorKind = "internal"


# --- specific errors -----------------------------------------------------------------------------------------
class InputError(InvalidInputError, TypeError):
    """The texts (or token ids) given to encode are not what it accepts."""


class ConfigError(InvalidInputError):
    """An option has a value outside its range, or names something that does not exist."""


class VariantError(InvalidInputError):
    """An unknown variant was requested, or a variant cannot run on the chosen provider."""


class ManifestError(IntegrityError):
    """The model directory's manifest is missing, unreadable or does not match the schema."""


class ModelNotFoundError(ManifestError, InvalidInputError):
    """The path given as a model directory does not exist or holds no manifest."""

    kind: ErrorKind = "invalid_input"


class ProviderUnavailableError(UnavailableError):
    """An explicitly requested execution provider could not be activated."""


class MissingExtraError(UnavailableError, ImportError):
    """An optional part of e5rt needs a package that is not installed; the message names the extra."""


class QueueFullError(OverloadedError):
    """The batching queue holds as many texts as it may."""


class ShuttingDownError(UnavailableError):
    """The batching queue is closed: the service is draining or has stopped."""


class NotReadyError(UnavailableError):
    """A served model is still loading, draining, or failed to load (``code`` says which)."""

    def __init__(self, message: str, code: str, retry_after: float | None = 1.0) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class TooLongError(InputError):
    """An input is longer than the model takes and truncation is off (or token ids, which are never cut)."""

    kind: ErrorKind = "too_large"
    code: str | None = "input_too_long"


class WrongTaskError(InvalidInputError):
    """A request for one task reached a model of another (embeddings from a reranker, scores from an embedder).
    ``served`` is the kind the model has (an interface names the routes for it)."""

    kind: ErrorKind = "not_found"
    code: str | None = "wrong_model_task"

    def __init__(self, served: object, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.served = served


class NoModelError(InvalidInputError):
    """A request names a model the server does not serve, or a task none of its models has."""

    kind: ErrorKind = "not_found"
    code: str | None = "no_model"


def kind_of(exc: BaseException) -> ErrorKind:
    """The kind of any exception; anything not raised on purpose counts as internal."""
    return exc.kind if isinstance(exc, E5rtError) else "internal"
