"""The project's exception hierarchy: one root, one subclass per failure kind.

Every error carries a stable machine-readable ``code`` (stored on feeds and shown by the
API) and a human-readable message with the detail.
"""

from __future__ import annotations


class NewsdeskError(Exception):
    """Root of every error newsdesk raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def detail(self) -> str:
        return str(self)


class ConfigError(NewsdeskError):
    """A setting is missing or malformed."""

    code = "config_error"


class FetchError(NewsdeskError):
    """A source could not be fetched (network, HTTP status, size, address policy)."""

    code = "fetch_error"


class ParseError(NewsdeskError):
    """A fetched document is not a usable feed or article file."""

    code = "parse_error"


class ExtractError(NewsdeskError):
    """An item holds no article text that can be stored."""

    code = "extract_error"


class StorageError(NewsdeskError):
    """The database refused or lost a write."""

    code = "storage_error"


class NotFound(NewsdeskError):
    """A requested record does not exist."""

    code = "not_found"


class InvalidInput(NewsdeskError):
    """A request or argument is malformed; ``param`` names the offending part."""

    code = "invalid"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class Conflict(NewsdeskError):
    """The request collides with an existing record."""

    code = "conflict"
