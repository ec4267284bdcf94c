"""Settings: environment variables read once, on first use, into one frozen object.

Nothing here runs at import time, so a cold start pays only for the settings an
invocation actually touches. Tests change the environment and call
``reset_settings()``.
"""

import os
import re
from dataclasses import dataclass
from functools import lru_cache


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    stage: str
    database_url: str | None
    db_secret_arn: str | None
    db_iam_auth: bool
    db_user: str
    db_host: str | None
    db_port: int
    db_name: str
    db_ssl_root_cert: str | None
    db_ssl_trust_system: bool
    db_app_role: str | None
    statement_timeout_ms: int
    connect_timeout_s: int
    region: str
    verify_jwt: bool
    cognito_user_pool_id: str | None
    cognito_client_ids: tuple[str, ...]
    cognito_jwks_url: str | None
    jwt_leeway_s: int
    max_body_bytes: int
    usage_max_age_days: int
    usage_max_future_s: int
    events_topic_arn: str | None
    ses_sender: str
    sqs_report_batch_item_failures: bool
    consumer_stale_after_s: int
    dunning_retry_days: tuple[int, ...]
    payment_gateway: str
    mock_payment_outcome: str
    mock_payment_decline_percent: int
    rebill_catch_up_periods: int
    payment_claim_lease_s: int
    resource_prefix: str
    cors_allowed_origins: tuple[str, ...]
    stripe_api_base: str | None
    stripe_timeout_s: float
    payment_concurrency: int
    gateway_credentials_ttl_s: int
    gateway_credentials_store: str
    gateway_secrets_kms_key_id: str | None
    public_api_url: str | None
    webhook_timeout_s: float
    webhook_time_scale: float

    @property
    def is_production(self) -> bool:
        """Money is real here: a tenant without a connected gateway is never charged by the mock."""
        return self.stage in ("prod", "production")

    @property
    def runs_locally(self) -> bool:
        """``make run`` and tests: webhooks may go to http://127.0.0.1 (never in a deployed stage)."""
        return self.stage in ("local", "test")

    @property
    def cognito_issuer(self) -> str | None:
        if not self.cognito_user_pool_id:
            return None
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.cognito_user_pool_id}"

    @property
    def jwks_url(self) -> str | None:
        issuer = self.cognito_issuer
        return self.cognito_jwks_url or (f"{issuer}/.well-known/jwks.json" if issuer else None)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ.get
    return Settings(
        stage=env("STAGE", "local"),
        region=env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1",
        # Off only where API Gateway's Cognito authorizer has verified the token.
        verify_jwt=_flag("VERIFY_JWT", True),
        cognito_user_pool_id=env("COGNITO_USER_POOL_ID") or None,
        cognito_client_ids=tuple(c for c in env("COGNITO_CLIENT_IDS", "").split(",") if c),
        cognito_jwks_url=env("COGNITO_JWKS_URL") or None,
        jwt_leeway_s=int(env("JWT_LEEWAY_S", "30")),
        max_body_bytes=int(env("MAX_BODY_BYTES", str(256 * 1024))),
        usage_max_age_days=int(env("USAGE_MAX_AGE_DAYS", "35")),
        usage_max_future_s=int(env("USAGE_MAX_FUTURE_S", "300")),
        events_topic_arn=env("EVENTS_TOPIC_ARN") or None,
        ses_sender=env("SES_SENDER", "billing@example.com"),
        # Only where the event-source mapping has ReportBatchItemFailures: without
        # it Lambda deletes the whole batch on a normal return, failures included.
        sqs_report_batch_item_failures=_flag("SQS_REPORT_BATCH_ITEM_FAILURES", False),
        # A consumer claim older than this (the queue's visibility timeout) was
        # left by a crashed invocation and may be taken over.
        consumer_stale_after_s=int(env("CONSUMER_STALE_AFTER_S", "180")),
        dunning_retry_days=tuple(int(d) for d in env("DUNNING_RETRY_DAYS", "1,3,7").split(",") if d.strip()),
        # A renewal message bills at most this many overdue periods in a row.
        rebill_catch_up_periods=int(env("REBILL_CATCH_UP_PERIODS", "12")),
        # A settler holds a payment attempt this long while it calls the gateway; a
        # crashed settler's claim lapses after it (keep it >= the function timeout).
        payment_claim_lease_s=int(env("PAYMENT_CLAIM_LEASE_S", "60")),
        resource_prefix=env("RESOURCE_PREFIX", "billing"),
        # Origins whose browsers may call the API (chalicelib.cors): set per stage in .chalice/config.json.
        cors_allowed_origins=cors_origins(env("CORS_ALLOWED_ORIGINS", ""), env("STAGE", "local")),
        **_database_settings(env),
        **_payment_settings(env),
        **_webhook_settings(env),
    )


def _database_settings(env) -> dict:
    """Where the database is and how to log in: DATABASE_URL (local, tests), else IAM authentication
    (DB_IAM_AUTH=true, the functions) or the Secrets Manager secret (DB_SECRET_ARN, the migrations)."""
    return dict(
        database_url=env("DATABASE_URL") or None,
        db_secret_arn=env("DB_SECRET_ARN") or None,
        # The login signs a 15-minute token with the function's own credentials for every new connection.
        db_iam_auth=_flag("DB_IAM_AUTH", False),
        db_user=env("DB_USER") or "billing_runtime",
        db_host=env("DB_HOST") or None,
        db_port=int(env("DB_PORT", "5432")),
        db_name=env("DB_NAME", "billing"),
        # The CA bundle Aurora's certificate is verified against (a relative path is in the package, beside
        # app.py). Required by DB_IAM_AUTH and DB_SECRET_ARN; DATABASE_URL's sslrootcert= falls back to it.
        db_ssl_root_cert=env("DB_SSL_ROOT_CERT") or None,
        # Also the system's trust store: an RDS Proxy's certificate is ACM's, under Amazon's roots.
        db_ssl_trust_system=_flag("DB_SSL_TRUST_SYSTEM", False),
        # An empty DB_APP_ROLE keeps the login role: only for a DATABASE_URL
        # that already logs in as a non-owner role.
        db_app_role=env("DB_APP_ROLE", "billing_app") or None,
        statement_timeout_ms=int(env("DB_STATEMENT_TIMEOUT_MS", "8000")),
        connect_timeout_s=int(env("DB_CONNECT_TIMEOUT_S", "5")),
    )


def _webhook_settings(env) -> dict:
    """Tenants' webhooks: a request's timeout, and (tests only) the retry schedule compressed in time."""
    stage = env("STAGE", "local")
    return dict(
        webhook_timeout_s=float(env("WEBHOOK_TIMEOUT_S", "10")),
        # Multiplies every wait of the retry schedule and its 3-day limits; tests run the real schedule
        # in seconds with 0.00001. Always 1 in production.
        webhook_time_scale=1.0 if stage in ("prod", "production") else float(env("WEBHOOK_TIME_SCALE", "1")),
    )


def _payment_settings(env) -> dict:
    """The gateway's settings (the Stripe client, tenants' credentials, the mock's behaviour)."""
    return dict(
        payment_gateway=env("PAYMENT_GATEWAY", "mock"),
        mock_payment_outcome=env("MOCK_PAYMENT_OUTCOME", "succeed"),
        mock_payment_decline_percent=int(env("MOCK_PAYMENT_DECLINE_PERCENT", "0")),
        # Only for the local Stripe stand-in (devtools/stripe_standin.py); unset, the SDK talks to Stripe.
        stripe_api_base=env("STRIPE_API_BASE") or None,
        # A Stripe call that has not answered in this long is a timeout: the attempt stays pending and
        # is retried with the same key (keep it well under PAYMENT_CLAIM_LEASE_S).
        stripe_timeout_s=float(env("STRIPE_TIMEOUT_S", "10")),
        # How many of a round's charges are in flight at once (collection._charge_all): a batch of 100 renewals
        # at Stripe's ~0.5 s each waits 50 s one by one, past the processor's timeout; 8 at a time, ~6 s.
        payment_concurrency=int(env("PAYMENT_CONCURRENCY", "8")),
        # A warm function re-reads a tenant's gateway credentials from Secrets Manager this often.
        gateway_credentials_ttl_s=int(env("GATEWAY_CREDENTIALS_TTL_S", "300")),
        # Where tenants' gateway credentials live: "secretsmanager" (every deployed stage, make run)
        # or "none" (tests that never reach AWS: every tenant has the mock). Production is always the former.
        gateway_credentials_store=env("GATEWAY_CREDENTIALS_STORE", "none"),
        gateway_secrets_kms_key_id=env("GATEWAY_SECRETS_KMS_KEY_ID") or None,
        # Where customers reach this API (links in emails sent outside a request); unset, emails carry none.
        public_api_url=(env("PUBLIC_API_URL") or "").rstrip("/") or None,
    )


# scheme://host[:port], as a browser sends it in Origin; ":*" is any port (and none), outside production only.
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_ORIGIN = re.compile(rf"^https?://(\[[0-9a-f:.]+\]|{_LABEL}(\.{_LABEL})*)(:(\d{{1,5}}|\*))?$")


def cors_origins(raw: str, stage: str) -> tuple[str, ...]:
    """CORS_ALLOWED_ORIGINS, comma-separated: exact origins (``https://app.example.com``), ``http://localhost:*``
    (any port) or ``*`` (any origin). Production takes exact https origins only: a stage that names ``*``,
    a port wildcard or plain http there refuses to load its settings (and devtools.package to package it)."""
    origins = tuple(entry.strip().lower().rstrip("/") for entry in raw.split(",") if entry.strip())
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise ValueError(f"CORS_ALLOWED_ORIGINS: {origin!r} is not an origin (scheme://host[:port])")
        if stage in ("prod", "production") and (origin == "*" or origin.endswith(":*") or origin.startswith("http:")):
            raise ValueError(f"CORS_ALLOWED_ORIGINS: {origin!r} in {stage}: production names exact https origins only")
    return origins


def reset_settings() -> None:
    get_settings.cache_clear()
