"""What went wrong, in the domain's words. One class per meaning; no HTTP here.

app.py (through chalicelib.http) maps each kind to its status. ``details`` carries
field-level reasons, ``[{"field": "plan", "issue": "..."}]``.
"""


class BillingError(Exception):
    kind = "api_error"

    def __init__(self, message: str, *, details: list[dict] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.code = code


class InvalidRequest(BillingError):
    """The request itself is malformed or fails validation."""

    kind = "invalid_request"


class Unauthenticated(BillingError):
    kind = "authentication_error"


class Forbidden(BillingError):
    kind = "permission_error"


class NotFound(BillingError):
    """Absent, or another tenant's: the two are indistinguishable on purpose."""

    kind = "not_found"

    def __init__(self, message: str, *, details: list[dict] | None = None, code: str | None = "resource_missing"):
        super().__init__(message, details=details, code=code)


class Conflict(BillingError):
    kind = "conflict"


class UnprocessableState(BillingError):
    """Valid input that the current state does not allow (cancelling a cancelled subscription)."""

    kind = "invalid_state"


class PayloadTooLarge(BillingError):
    kind = "payload_too_large"


class UnsupportedMediaType(BillingError):
    kind = "unsupported_media_type"


class RateLimited(BillingError):
    kind = "rate_limited"


class ServiceUnavailable(BillingError):
    kind = "service_unavailable"
