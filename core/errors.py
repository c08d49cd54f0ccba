"""Errors a user can act on. `str(err)` is shown word for word, so it says what happened and what to do."""

import re


class AppError(Exception):
    """Base for errors the user can act on; the message is shown in the UI and on the CLI as-is."""


class AOIError(AppError):
    """The area of interest cannot be used (unreadable, not polygonal, invalid, too large...)."""


class InvalidPolygon(AOIError):
    """The area's polygon is invalid (it crosses itself...); callers that can repair it say how."""


class DateRangeError(AppError):
    """The requested dates are malformed or reversed."""


class SourceError(AppError):
    """A data source is unknown, missing or unusable."""


class NoScenesFound(AppError):
    """No scene of any source matches the AOI and the dates."""


class ModelError(AppError):
    """The requested model is unknown, has no weights, or does not fit the task or the data."""


class UntrainedModel(ModelError):
    """The model has no weights yet (or its card lacks what running it needs); callers say how to get them."""

    def __init__(self, message: str, model_id: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class OutputError(AppError):
    """The output location cannot be written."""


class SpecError(AppError):
    """A job request has a field of the wrong kind or out of range."""


class JobCancelled(AppError):
    """The user cancelled the job; partial work is kept in the cache, nothing is published."""


class SourceUnavailable(ConnectionError):
    """Every source that could serve the job is down, overloaded or unreachable right now.

    Not an AppError on purpose: the job system retries it later with backoff (a ConnectionError is transient),
    while the user still reads `str(err)` as the reason.
    """


_QUOTED_PATH = re.compile(r"""(['"])[^'"]*[/\\][^'"]*\1""")
_BARE_PATH = re.compile(r"(?<![\w.])(/|[A-Za-z]:\\)\S+")


def plain_reason(err: BaseException) -> str:
    """The first sentence of a library's error for a user to read: without file paths (they name the server's
    folders) or what follows them (GDAL's hints about other drivers)."""
    text = str(err).splitlines()[0] if str(err) else ""
    text = " ".join(_BARE_PATH.sub("", _QUOTED_PATH.sub("", text)).split()).strip(" :;,")
    first = text.split(". ")[0].strip().rstrip(".")
    return first or type(err).__name__
