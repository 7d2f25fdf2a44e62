"""Errors a user can act on: the CLI prints their message as one line and exits non-zero."""


class IntelRouterError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ConfigError(IntelRouterError):
    """A setting is unknown or has a bad value."""


class InputError(IntelRouterError):
    """A file, column, date or text given by the user is not usable."""


class StoreError(IntelRouterError):
    """The database is unreachable or not migrated."""


class NotFoundError(IntelRouterError):
    """A query id, model version or alias does not exist."""


class InsufficientDataError(IntelRouterError):
    """Too few approved samples to train."""


class NoActiveModelError(NotFoundError):
    """No model carries the @production alias."""

    def __init__(self) -> None:
        super().__init__("No active model found: run `intelrouter train`")


class RegistryError(IntelRouterError):
    """The tracking server or registry cannot be reached or refused a change."""


class LabelStudioError(IntelRouterError):
    """Label Studio is unreachable, refused the token, or answered unexpectedly."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), at most `limit` characters."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
