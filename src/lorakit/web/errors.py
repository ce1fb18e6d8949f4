"""Errors the API answers with a status code and the message (never a traceback)."""

from __future__ import annotations

from ..errors import LorakitError


class WebError(LorakitError):
    """A request that cannot be done as sent (422)."""

    status = 422


class NotFound(WebError):
    status = 404


class Conflict(WebError):
    """The request clashes with the state of a job or a file (409)."""

    status = 409


class Refused(WebError):
    """A path outside the allowed folders, a cross-site request (403)."""

    status = 403


def status_of(error: LorakitError) -> int:
    """Library errors (a bad config, a broken dataset) are the request's fault: 422."""
    return getattr(error, "status", 422)
