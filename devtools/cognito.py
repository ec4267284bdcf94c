"""A local Cognito user pool (moto) that issues real RS256 ID tokens, and a forger for attacks.

moto signs every pool's tokens with one key pair it ships; the app is pointed at
that pool's issuer, client id and public JWKS exactly as it would be at AWS.
"""

import base64
import gzip
import hashlib
import hmac
import json
import time
import uuid
from importlib import resources
from pathlib import Path

import boto3

_RESOURCES = resources.files("moto") / "cognitoidp" / "resources"


def moto_jwks(private: bool = False) -> dict:
    name = "jwks-private.json.gz" if private else "jwks-public.json.gz"
    return json.loads(gzip.decompress((_RESOURCES / name).read_bytes()))


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def _segment(document: dict) -> str:
    return _b64(json.dumps(document).encode())


def alg_none(claims: dict) -> str:
    """An unsigned token that claims it needs no signature."""
    return f"{_segment({'alg': 'none', 'kid': 'dummy'})}.{_segment(claims)}."


def hs256_with_public_key(claims: dict) -> str:
    """The algorithm-confusion attack: HMAC-signed with the pool's public key as the secret."""
    header_payload = f"{_segment({'alg': 'HS256', 'kid': 'dummy'})}.{_segment(claims)}"
    secret = json.dumps(moto_jwks()["keys"][0]).encode()
    return f"{header_payload}.{_b64(hmac.new(secret, header_payload.encode(), hashlib.sha256).digest())}"


def tampered(token: str, **changes) -> str:
    """A genuine token with claims edited and its original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{_segment(claims)}.{signature}"


class LocalPool:
    """Create with a moto context active. ``token(tenant_id, "ADMIN")`` signs in a user and returns its ID token."""

    password = "Local-Passw0rd!"

    def __init__(self, jwks_dir: Path | None = None, region: str = "us-east-1", pool_id: str | None = None):
        self.client = boto3.client("cognito-idp", region_name=region)
        self.region = region
        if pool_id:  # attach to a pool created earlier (the token command)
            self.pool_id = pool_id
            self.client_id = self.client.list_user_pool_clients(UserPoolId=pool_id)["UserPoolClients"][0]["ClientId"]
            self.jwks_path = None
            return
        pool = self.client.create_user_pool(
            PoolName="billing-users",
            Schema=[{"Name": "tenant_id", "AttributeDataType": "String", "Mutable": False}],
        )["UserPool"]
        self.pool_id = pool["Id"]
        self.client_id = self.client.create_user_pool_client(
            UserPoolId=self.pool_id,
            ClientName="billing-api",
            ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]["ClientId"]
        for group in ("ADMIN", "USER"):
            self.client.create_group(UserPoolId=self.pool_id, GroupName=group)
        self.jwks_path = None
        if jwks_dir is not None:  # in-process moto serves no HTTP: hand the app the key set as a file
            jwks_dir.mkdir(parents=True, exist_ok=True)
            self.jwks_path = jwks_dir / "jwks.json"
            self.jwks_path.write_text(json.dumps(moto_jwks()))

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.pool_id}"

    def env(self, endpoint: str | None = None) -> dict:
        """What the app needs to verify this pool's tokens; ``endpoint`` is a moto server's URL."""
        jwks = f"{endpoint}/{self.pool_id}/.well-known/jwks.json" if endpoint else self.jwks_path.as_uri()
        return {
            "VERIFY_JWT": "true",
            "COGNITO_USER_POOL_ID": self.pool_id,
            "COGNITO_CLIENT_IDS": self.client_id,
            "COGNITO_JWKS_URL": jwks,
        }

    def token(self, tenant_id: str, *groups: str, username: str | None = None, kind: str = "IdToken") -> str:
        username = username or f"user-{uuid.uuid4().hex[:10]}"
        self.client.admin_create_user(
            UserPoolId=self.pool_id,
            Username=username,
            UserAttributes=[{"Name": "custom:tenant_id", "Value": tenant_id}],
            MessageAction="SUPPRESS",
        )
        self.client.admin_set_user_password(
            UserPoolId=self.pool_id, Username=username, Password=self.password, Permanent=True
        )
        for group in groups:
            self.client.admin_add_user_to_group(UserPoolId=self.pool_id, Username=username, GroupName=group)
        result = self.client.admin_initiate_auth(
            UserPoolId=self.pool_id,
            ClientId=self.client_id,
            AuthFlow="ADMIN_USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": self.password},
        )
        return result["AuthenticationResult"][kind]

    def forge(self, tenant_id: str | None = None, groups=("ADMIN",), header=None, **overrides) -> str:
        """A token signed with the pool's real key, with any claim or header changed."""
        from joserfc import jwk, jwt

        now = int(time.time())
        claims = {
            "sub": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": self.client_id,
            "token_use": "id",
            "iat": now,
            "auth_time": now,
            "exp": now + 3600,
            "custom:tenant_id": tenant_id,
            "cognito:groups": list(groups),
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        key = jwk.RSAKey.import_key(moto_jwks(private=True))
        return jwt.encode(header or {"alg": "RS256", "kid": "dummy"}, claims, key)
