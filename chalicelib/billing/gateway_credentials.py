"""A tenant's payment-gateway credentials: kept in AWS Secrets Manager, never in the database.

One secret per tenant, ``{RESOURCE_PREFIX}/tenants/{tenant_id}/gateway`` (the Lambda policy
grants that prefix only), encrypted with ``GATEWAY_SECRETS_KMS_KEY_ID`` where set. Its value
is JSON: provider, secret_key, webhook_secret, account_id, connected_at, publishable_key. The keys are never
logged and never returned: ``describe`` shows their last 4 characters and the gateway's
account id. A warm function caches what it read (absence included) for
``GATEWAY_CREDENTIALS_TTL_S``; a connection made in this process replaces its cache at once.
"""

import json
import threading
import time
from dataclasses import asdict, dataclass, fields

from chalicelib import aws, errors
from chalicelib.billing.payments import GatewayUnavailable
from chalicelib.config import get_settings


@dataclass(frozen=True)
class Credentials:
    tenant_id: str
    provider: str
    secret_key: str
    webhook_secret: str
    account_id: str
    connected_at: str
    publishable_key: str = ""

    def __repr__(self) -> str:  # never the keys, whatever logs it
        return f"Credentials(tenant_id={self.tenant_id!r}, provider={self.provider!r}, account_id={self.account_id!r})"

    def describe(self) -> dict:
        return {
            "object": "gateway",
            "connected": True,
            "provider": self.provider,
            "account_id": self.account_id,
            "secret_key_last4": self.secret_key[-4:],
            "webhook_secret_last4": self.webhook_secret[-4:],
            "publishable_key": self.publishable_key or None,
            "connected_at": self.connected_at,
        }


_cache: dict[str, tuple[float, Credentials | None]] = {}
_lock = threading.Lock()


def secret_name(tenant_id: str) -> str:
    return f"{get_settings().resource_prefix}/tenants/{tenant_id}/gateway"


def get(tenant_id: str) -> Credentials | None:
    """The tenant's credentials, or None when it connected no gateway (cached per warm function);
    ``GatewayUnavailable`` when Secrets Manager does not answer."""
    now = time.monotonic()
    cached = _cache.get(tenant_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    credentials = _read(tenant_id)
    with _lock:
        _cache[tenant_id] = (now + get_settings().gateway_credentials_ttl_s, credentials)
    return credentials


def store(tenant_id: str, credentials: Credentials) -> Credentials:
    """Create or replace the tenant's secret; the credentials as stored (503 when Secrets Manager fails)."""
    value = json.dumps({k: v for k, v in asdict(credentials).items() if k != "tenant_id"})
    client = aws.client("secretsmanager")
    from botocore.exceptions import BotoCoreError, ClientError  # loaded with the client above

    try:
        try:
            client.put_secret_value(SecretId=secret_name(tenant_id), SecretString=value)
        except client.exceptions.ResourceNotFoundException:
            _create(client, tenant_id, value)
    except client.exceptions.ResourceExistsException:  # a concurrent first connection made it: replace it
        _put_again(client, tenant_id, value)
    except (ClientError, BotoCoreError) as exc:
        raise errors.ServiceUnavailable("the credential store did not answer; try again") from exc
    with _lock:
        _cache[tenant_id] = (time.monotonic() + get_settings().gateway_credentials_ttl_s, credentials)
    return credentials


def _put_again(client, tenant_id: str, value: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.put_secret_value(SecretId=secret_name(tenant_id), SecretString=value)
    except (ClientError, BotoCoreError) as exc:
        raise errors.ServiceUnavailable("the credential store did not answer; try again") from exc


def _create(client, tenant_id: str, value: str) -> None:
    kms = get_settings().gateway_secrets_kms_key_id
    client.create_secret(
        Name=secret_name(tenant_id),
        SecretString=value,
        Description=f"Payment gateway credentials of tenant {tenant_id}",
        Tags=[{"Key": "tenant_id", "Value": tenant_id}],
        **({"KmsKeyId": kms} if kms else {}),
    )


def enabled() -> bool:
    settings = get_settings()
    return settings.gateway_credentials_store == "secretsmanager" or settings.is_production


def _read(tenant_id: str) -> Credentials | None:
    if not enabled():
        return None
    client = aws.client("secretsmanager")
    from botocore.exceptions import BotoCoreError, ClientError  # loaded with the client above

    try:
        raw = client.get_secret_value(SecretId=secret_name(tenant_id))["SecretString"]
    except client.exceptions.ResourceNotFoundException:
        return None
    except (ClientError, BotoCoreError) as exc:  # throttled, KMS, access, network: no answer about this tenant yet
        raise GatewayUnavailable(f"Secrets Manager did not answer: {type(exc).__name__}") from exc
    value = json.loads(raw)
    known = {f.name for f in fields(Credentials)}
    return Credentials(tenant_id=tenant_id, **{k: v for k, v in value.items() if k in known})


def forget() -> None:
    """Drop every cached read (tests switch AWS contexts)."""
    with _lock:
        _cache.clear()


def get_for_request(tenant_id: str) -> Credentials | None:
    """``get`` for a request someone waits on: Secrets Manager's silence is a 503 to retry."""
    try:
        return get(tenant_id)
    except GatewayUnavailable as exc:
        raise errors.ServiceUnavailable("the credential store did not answer; try again") from exc
