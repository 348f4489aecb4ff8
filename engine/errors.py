"""The engine's one exception tree.

The HTTP layer maps these to status codes in one place (``realtime/errors.py``); nothing below
it knows about HTTP. Every error that a caller can fix carries ``field``: the path of the input
that is wrong, in the caller's own terms (``events[3].data.amount``).
"""

from __future__ import annotations

from engine import views


class RekindleError(Exception):
    """Base of everything the engine raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def at(self, prefix: str) -> "RekindleError":
        """Re-root ``field`` under ``prefix`` (an event inside a batch, a body inside a request)."""
        if not prefix:
            return self
        self.field = f"{prefix}.{self.field}" if self.field else prefix
        return self

    def as_dict(self) -> views.ErrorDetail:
        body = views.ErrorDetail(code=self.code, message=self.message)
        if self.field:
            body["field"] = self.field
        return body


class InvalidInput(RekindleError):
    """Input is malformed or breaks a rule it could have known: the caller must change it."""

    code = "invalid"


class InvalidEvent(InvalidInput):
    """An event's id, type, time or data does not fit the active programme."""

    code = "invalid_event"


class EventOutOfWindow(InvalidEvent):
    """An event's ``at`` lies before the window events are accepted in, or too far ahead."""

    code = "event_out_of_window"


class ConfigError(RekindleError):
    """A programme (TOML) does not validate; ``problems`` lists every mistake found."""

    code = "invalid_config"

    def __init__(self, message: str, problems: list["ConfigProblem"]) -> None:
        super().__init__(message)
        self.problems = problems


class ConfigProblem:
    """One mistake in one file: where (file, key path) and why."""

    __slots__ = ("file", "path", "reason")

    def __init__(self, file: str, path: str, reason: str) -> None:
        self.file, self.path, self.reason = file, path, reason

    def __str__(self) -> str:
        return f"{self.file}: {self.path or '<top>'}: {self.reason}"

    def as_dict(self) -> views.ConfigProblem:
        return views.ConfigProblem(file=self.file, path=self.path, reason=self.reason)


class NotFound(RekindleError):
    """The named member, quest or object does not exist."""

    code = "not_found"


class Conflict(RekindleError):
    """The request contradicts stored state (e.g. an event id reused with another body)."""

    code = "conflict"


class Refused(Conflict):
    """Stored state refuses the operation (the balance, a coupon's state, stock, a limit);
    nothing was written. ``code`` says which: insufficient_points, out_of_stock,
    limit_reached, already_used, revoked, expired."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


class StoreError(RekindleError):
    """Redis answered something the engine did not expect; never shown to callers in detail."""

    code = "store_error"
