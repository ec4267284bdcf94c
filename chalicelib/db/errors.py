"""PostgreSQL failures as our own types, keyed by SQLSTATE.

This is the first of three layers: the driver's error becomes one of these, the
domain turns it into its meaning (``AlreadyBilled``, ``DuplicateEvent``), and only
app.py turns meaning into HTTP.
"""


class DatabaseError(Exception):
    """A statement failed. ``code`` is the SQLSTATE, ``constraint`` the violated one."""

    def __init__(self, message: str, code: str | None = None, constraint: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.constraint = constraint


class UniqueViolation(DatabaseError):
    pass


class ForeignKeyViolation(DatabaseError):
    pass


class CheckViolation(DatabaseError):
    pass


class NotNullViolation(DatabaseError):
    pass


class InvalidValue(DatabaseError):
    """The value did not fit its column type (bad uuid text, integer overflow)."""


class RetryableError(DatabaseError):
    """The transaction was rolled back for a reason of the moment: it may be retried whole."""


class SerializationFailure(RetryableError):
    """Serialization failure or deadlock."""


class LockNotAvailable(RetryableError):
    """A lock was not granted within lock_timeout."""


class StalePreparedStatement(RetryableError):
    """A statement this connection had prepared is gone (a pooler's DISCARD) or its result changed
    shape (a migration): parsed afresh when sent again (chalicelib/db/adapters.py)."""


class QueryTimeout(DatabaseError):
    pass


class RaisedByTrigger(DatabaseError):
    """A trigger or function said no (RAISE EXCEPTION, SQLSTATE P0001)."""


class InsufficientPrivilege(DatabaseError):
    pass


class DatabaseUnavailable(DatabaseError):
    """No connection, or it was lost: the server is down, restarting or unreachable."""


_BY_CODE = {
    "23505": UniqueViolation,
    "23503": ForeignKeyViolation,
    "23514": CheckViolation,
    "23502": NotNullViolation,
    "22P02": InvalidValue,
    "22003": InvalidValue,
    "22001": InvalidValue,
    "22007": InvalidValue,
    "22008": InvalidValue,
    "22021": InvalidValue,
    "22P05": InvalidValue,
    "40001": SerializationFailure,
    "40P01": SerializationFailure,
    "55P03": LockNotAvailable,
    "57014": QueryTimeout,
    "P0001": RaisedByTrigger,
    "42501": InsufficientPrivilege,
    "57P01": DatabaseUnavailable,
    "57P02": DatabaseUnavailable,
    "57P03": DatabaseUnavailable,
}


def translate(exc: Exception) -> DatabaseError:
    """Map a pg8000 exception to our type; connection-level failures become DatabaseUnavailable."""
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else None
    if fields is None:
        return DatabaseUnavailable(str(exc) or type(exc).__name__)
    code = fields.get("C")
    if getattr(exc, "billing_stale", False):
        return StalePreparedStatement(fields.get("M", str(exc)), code=code)
    kind = _BY_CODE.get(code)
    if kind is None and code and code.startswith("08"):
        kind = DatabaseUnavailable
    return (kind or DatabaseError)(fields.get("M", str(exc)), code=code, constraint=fields.get("n"))
