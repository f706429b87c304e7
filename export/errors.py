"""Errors the export stage raises on purpose; each message says what to do next."""

from __future__ import annotations


class ExportError(Exception):
    """Base class for export failures."""


class UnsupportedArchitectureError(ExportError):
    pass


class MissingTokenizerError(ExportError):
    pass


class OutputExistsError(ExportError):
    pass


class OutputNotWritableError(ExportError):
    pass


class HubUnreachableError(ExportError):
    pass


class DiskSpaceError(ExportError):
    pass


class ParityError(ExportError):
    pass
