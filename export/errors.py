"""Errors the export stage raises on purpose; each message says what to do next.

They join e5rt's one error tree: an ExportError is an E5rtError, and each class also carries its kind.
"""

from __future__ import annotations

from e5rt.errors import E5rtError, IntegrityError, InvalidInputError, UnavailableError


class ExportError(E5rtError):
    """Base class for export failures (kind 'internal' unless a subclass says otherwise)."""


class UnsupportedArchitectureError(ExportError, InvalidInputError):
    pass


class MissingTokenizerError(ExportError, InvalidInputError):
    pass


class OutputExistsError(ExportError, InvalidInputError):
    pass


class OutputNotWritableError(ExportError, UnavailableError):
    pass


class HubUnreachableError(ExportError, UnavailableError):
    pass


class DiskSpaceError(ExportError, UnavailableError):
    pass


class ParityError(ExportError, IntegrityError):
    pass


class ExportOptionError(ExportError, InvalidInputError):
    """An export option is out of range for this checkpoint (max length, int8 target, variant names)."""


class SourceUnavailableError(ExportError, UnavailableError):
    """A package or library the chosen source needs is not installed."""
