"""Domain errors raised below the routes; serving/routes turns them into HTTP errors."""

from __future__ import annotations


class ServingError(Exception):
    """Base class; the message is safe to show to the caller."""


class NotFound(ServingError):
    """An item, category or tier the current model does not know (HTTP 404)."""


class Unavailable(ServingError):
    """A dependency (Redis, the registry) is unreachable and there is no fallback (HTTP 503)."""


class NotReady(ServingError):
    """No model is loaded yet (HTTP 503)."""


class ReloadRefused(ServingError):
    """The new bundle failed verification; the previous models keep serving (HTTP 409)."""
