"""The Cognito user pool, as the app calls it: the one place its errors become the API's.

Machine clients (``api_clients``) and onboarding (``onboarding``) call the pool's admin actions
through ``call``. An answer the caller expects (``expected``: a user that is not there, one that
already is) comes back as its error code; anything else becomes an error with a code: the pool
refusing a value is a 400, its quotas a 403, throttling and outages a retryable 503. Never a 500.
"""

import logging

from chalicelib import aws, errors
from chalicelib.config import get_settings

log = logging.getLogger("billing.user_pool")
_REFUSED_VALUES = ("InvalidParameterException", "InvalidOAuthFlowException", "ScopeDoesNotExistException")
_QUOTAS = ("LimitExceededException",)


def call(action: str, expected: tuple[str, ...] = (), **params) -> dict | str:
    """``action`` (a boto3 method name) on this stage's pool; an ``expected`` error code is returned as is."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = aws.client("cognito-idp")
    try:
        return getattr(client, action)(UserPoolId=pool_id(), **params)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in expected:
            return code
        log.warning("the user pool refused %s: %s", action, code)
        if code in _REFUSED_VALUES:
            raise errors.InvalidRequest(
                "the user pool refused a value of this request", code="user_pool_refused"
            ) from exc
        if code in _QUOTAS:
            raise errors.Forbidden("the user pool's quota is reached", code="user_pool_limit_reached") from exc
        raise _unavailable() from exc
    except BotoCoreError as exc:
        log.warning("the user pool did not answer %s: %s", action, exc)
        raise _unavailable() from exc


def pool_id() -> str:
    pool = get_settings().cognito_user_pool_id
    if not pool:
        raise errors.ServiceUnavailable("the user pool is not configured on this stage")
    return pool


def _unavailable() -> errors.ServiceUnavailable:
    return errors.ServiceUnavailable(
        "the identity provider did not answer, retry shortly", code="identity_provider_unavailable"
    )
