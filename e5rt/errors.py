"""Every error the runtime raises on purpose derives from E5rtError, so callers can catch one type."""

from __future__ import annotations


class E5rtError(Exception):
    """Base class for errors raised by e5rt."""


class ManifestError(E5rtError):
    """The model directory's manifest is missing, unreadable or does not match the schema."""


class IntegrityError(E5rtError):
    """A model file's size or sha256 differs from what the manifest recorded."""


class VariantError(E5rtError):
    """An unknown variant was requested, or a variant cannot run on the chosen provider."""


class ProviderUnavailableError(E5rtError):
    """An explicitly requested execution provider could not be activated."""


class InputError(E5rtError, TypeError):
    """The texts given to encode() are not a string or a flat list of strings."""
