"""A local Cognito user pool (moto) that issues real RS256 access tokens, and a forger for attacks.

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

from chalicelib.auth import RESOURCE_SERVER, SCOPES

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
    """Create with a moto context active. ``token(tenant_id, "ADMIN")`` signs in a user and returns its
    access token; ``machine_token(client_id, secret)`` is a client-credentials grant."""

    password = "Local-Passw0rd!"
    # How the trigger reads a tenant: None is this process's database (the app's settings); a stack
    # serving another database sets its own.
    lookup = None

    def __init__(self, jwks_dir: Path | None = None, region: str = "us-east-1", pool_id: str | None = None):
        self.client = boto3.client("cognito-idp", region_name=region)
        self.region = region
        if pool_id:  # attach to a pool created earlier (the token command)
            self.pool_id = pool_id
            clients = self.client.list_user_pool_clients(UserPoolId=pool_id, MaxResults=60)["UserPoolClients"]
            self.client_id = next(c["ClientId"] for c in clients if c["ClientName"] == "billing-api")
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
        self.client.create_resource_server(  # as infra/modules/cognito declares it
            UserPoolId=self.pool_id,
            Identifier=RESOURCE_SERVER,
            Name="billing-platform API",
            Scopes=[{"ScopeName": s.split("/", 1)[1], "ScopeDescription": s} for s in SCOPES],
        )
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

    def token(self, tenant_id: str | None, *groups: str, username: str | None = None, kind: str = "AccessToken") -> str:
        """Sign a new user of ``tenant_id`` in (moto), then let the app's pre-token trigger shape the token,
        as Cognito does; raises ``identity.TokenRefused`` where Cognito would refuse to issue it."""
        username = username or f"user-{uuid.uuid4().hex[:10]}"
        attributes = [{"Name": "custom:tenant_id", "Value": tenant_id}] if tenant_id else []
        self.client.admin_create_user(
            UserPoolId=self.pool_id, Username=username, UserAttributes=attributes, MessageAction="SUPPRESS"
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
        )["AuthenticationResult"]
        return self.shaped(result, "TokenGeneration_Authentication", kind)

    def refreshed(self, refresh_token: str, kind: str = "AccessToken") -> str:
        """A refresh (``TokenGeneration_RefreshTokens``): the trigger runs again, on today's tenant."""
        result = self.client.admin_initiate_auth(
            UserPoolId=self.pool_id,
            ClientId=self.client_id,
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": refresh_token},
        )["AuthenticationResult"]
        return self.shaped(result, "TokenGeneration_RefreshTokens", kind)

    def shaped(self, tokens: dict, source: str, kind: str) -> str:
        """moto's token for a person, with what the trigger adds (moto runs no triggers), signed with moto's key."""
        access, id_claims = _claims_of(tokens["AccessToken"]), _claims_of(tokens["IdToken"])
        user = self.client.admin_get_user(UserPoolId=self.pool_id, Username=access["username"])
        event = _trigger_event(self, source, access["client_id"], access["username"])
        event["request"]["userAttributes"] = {a["Name"]: a["Value"] for a in user["UserAttributes"]}
        event["request"]["groupConfiguration"]["groupsToOverride"] = list(access.get("cognito:groups") or [])
        event["request"]["scopes"] = str(access.get("scope", "")).split()
        details = run_trigger(event, self.lookup)["response"]["claimsAndScopeOverrideDetails"]
        if kind == "IdToken":
            return self.sign({**id_claims, **(details.get("idTokenGeneration") or {}).get("claimsToAddOrOverride", {})})
        return self.sign(_with_access_overrides(access, details.get("accessTokenGeneration") or {}))

    def machine_token(self, client_id: str, client_secret: str, scopes: list[str] | None = None) -> str:
        """The client-credentials grant, as Cognito's /oauth2/token answers it (moto has no token endpoint):
        the client's secret checked, the scopes it asks for within the ones it was allowed (all of them by
        default), then the trigger (``TokenGeneration_ClientCredentials``), signed with moto's key."""
        client = self.client.describe_user_pool_client(UserPoolId=self.pool_id, ClientId=client_id)["UserPoolClient"]
        if not hmac.compare_digest(client.get("ClientSecret", ""), client_secret):
            raise PermissionError("invalid_client")
        allowed = client.get("AllowedOAuthScopes", [])
        asked = allowed if scopes is None else scopes
        if "client_credentials" not in client.get("AllowedOAuthFlows", []) or not set(asked) <= set(allowed):
            raise PermissionError("invalid_scope")
        event = _trigger_event(self, "TokenGeneration_ClientCredentials", client_id, None)
        event["request"]["scopes"] = list(asked)
        details = run_trigger(event, self.lookup)["response"]["claimsAndScopeOverrideDetails"]
        now = int(time.time())
        claims = {
            "sub": client_id,
            "token_use": "access",
            "scope": " ".join(asked),
            "auth_time": now,
            "iss": self.issuer,
            "exp": now + 3600,
            "iat": now,
            "version": 2,
            "jti": str(uuid.uuid4()),
            "client_id": client_id,
        }
        return self.sign(_with_access_overrides(claims, details.get("accessTokenGeneration") or {}))

    def sign(self, claims: dict, header: dict | None = None) -> str:
        from joserfc import jwk, jwt

        key = jwk.RSAKey.import_key(moto_jwks(private=True))
        return jwt.encode(header or {"alg": "RS256", "kid": "dummy"}, claims, key)

    def forge(self, tenant_id: str | None = None, groups=("ADMIN",), header=None, **overrides) -> str:
        """A person's access token signed with the pool's real key, with any claim or header changed
        (no trigger: a token for a tenant Cognito would refuse, say)."""
        now = int(time.time())
        claims = {
            "sub": str(uuid.uuid4()),
            "iss": self.issuer,
            "client_id": self.client_id,
            "token_use": "access",
            "scope": " ".join(SCOPES),
            "iat": now,
            "auth_time": now,
            "exp": now + 3600,
            "username": f"forged-{uuid.uuid4().hex[:8]}",
            "custom:tenant_id": tenant_id,
            "cognito:groups": list(groups),
        }
        claims.update(overrides)
        return self.sign({k: v for k, v in claims.items() if v is not None}, header)


def run_trigger(event: dict, lookup=None) -> dict:
    """The app's own trigger, in this process: reading this process's database, or through ``lookup``."""
    from chalicelib import identity

    return identity.pre_token_generation(event, lookup)


def _trigger_event(pool: "LocalPool", source: str, client_id: str, username: str | None) -> dict:
    """A V3 pre-token-generation event as Cognito sends it (request parts filled in by the caller)."""
    event = {
        "version": "3",
        "triggerSource": source,
        "region": pool.region,
        "userPoolId": pool.pool_id,
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": client_id},
        "request": {
            "userAttributes": {},
            "groupConfiguration": {"groupsToOverride": [], "iamRolesToOverride": [], "preferredRole": None},
            "scopes": [],
        },
        "response": {"claimsAndScopeOverrideDetails": None},
    }
    if username is not None:
        event["userName"] = username
    return event


def _with_access_overrides(claims: dict, generation: dict) -> dict:
    scopes = [s for s in str(claims.get("scope", "")).split() if s not in (generation.get("scopesToSuppress") or [])]
    scopes += [s for s in generation.get("scopesToAdd") or [] if s not in scopes]
    claims = {**claims, **(generation.get("claimsToAddOrOverride") or {}), "scope": " ".join(scopes)}
    return {k: v for k, v in claims.items() if k not in (generation.get("claimsToSuppress") or [])}


def _claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
