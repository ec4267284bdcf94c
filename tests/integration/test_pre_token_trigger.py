"""Cognito's pre-token-generation trigger (event version 3) on the events Cognito sends: a new user
signing in, a refresh, a client-credentials grant; and the tokens it refuses."""

import copy
import json

import pytest

from app import pre_token_generation as deployed_trigger
from chalicelib import identity
from chalicelib.db import transaction


def _person_event(source: str, tenant_id: str | None, groups=("ADMIN",)) -> dict:
    """As Cognito sends it for a person (V3: the same as V2 plus machine grants), with the user's attributes."""
    attributes = {
        "sub": "a1b2c3d4-0000-4000-8000-000000000001",
        "cognito:user_status": "CONFIRMED",
        "email": "ada@tenant.test",
        "email_verified": "true",
    }
    if tenant_id is not None:
        attributes["custom:tenant_id"] = tenant_id
    return {
        "version": "3",
        "triggerSource": source,
        "region": "us-east-1",
        "userPoolId": "us-east-1_EXAMPLE",
        "userName": "ada@tenant.test",
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "1example23456789"},
        "request": {
            "userAttributes": attributes,
            "groupConfiguration": {"groupsToOverride": list(groups), "iamRolesToOverride": [], "preferredRole": None},
            "scopes": ["openid", "email", "aws.cognito.signin.user.admin"],
        },
        "response": {"claimsAndScopeOverrideDetails": None},
    }


def _machine_event(client_id: str, scopes=("billing/usage.write",)) -> dict:
    """A client-credentials grant: no user, no attributes, the client and the scopes it asked for."""
    return {
        "version": "3",
        "triggerSource": "TokenGeneration_ClientCredentials",
        "region": "us-east-1",
        "userPoolId": "us-east-1_EXAMPLE",
        "userName": None,
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": client_id},
        "request": {
            "userAttributes": {},
            "groupConfiguration": {"groupsToOverride": [], "iamRolesToOverride": [], "preferredRole": None},
            "scopes": list(scopes),
        },
        "response": {"claimsAndScopeOverrideDetails": None},
    }


def _bind(tenant_id: str, client_id: str) -> None:
    with transaction(tenant_id=tenant_id) as tx:
        tx.run(
            "INSERT INTO api_clients (client_id, name, scopes) VALUES (:c, 'sender', '{billing/usage.write}')",
            c=client_id,
        )


def _details(event: dict) -> dict:
    return event["response"]["claimsAndScopeOverrideDetails"]


@pytest.mark.parametrize("source", ["TokenGeneration_Authentication", "TokenGeneration_HostedAuth"])
def test_a_new_user_signing_in_gets_tenant_claims_and_the_scopes_of_their_group(database_url, make_tenant, source):
    tenant = make_tenant("Acme")

    details = _details(identity.pre_token_generation(_person_event(source, tenant, groups=("USER",))))

    access = details["accessTokenGeneration"]
    assert access["claimsToAddOrOverride"] == {
        "custom:tenant_id": tenant,
        "plan_tier": "standard",
        "tenant_status": "active",
        "features": "api_clients hosted_invoices webhooks",
    }
    assert access["scopesToAdd"] == ["billing/read", "billing/usage.write", "billing/write"]
    assert details["idTokenGeneration"]["claimsToAddOrOverride"] == access["claimsToAddOrOverride"]
    json.dumps(details)  # Cognito takes JSON: every claim value is a string here


def test_an_admin_gets_the_admin_scope_too(database_url, make_tenant):
    tenant = make_tenant("Acme")

    event = identity.pre_token_generation(_person_event("TokenGeneration_Authentication", tenant))

    assert "billing/admin" in _details(event)["accessTokenGeneration"]["scopesToAdd"]


def test_a_user_asking_for_scopes_beyond_their_group_loses_them(database_url, make_tenant):
    event = _person_event("TokenGeneration_HostedAuth", make_tenant("Acme"), groups=("USER",))
    event["request"]["scopes"] += ["billing/admin", "billing/read"]

    access = _details(identity.pre_token_generation(event))["accessTokenGeneration"]

    assert access["scopesToSuppress"] == ["billing/admin"]
    assert access["scopesToAdd"] == ["billing/usage.write", "billing/write"]


def test_a_person_signing_in_through_a_machine_client_is_refused(database_url, make_tenant):
    tenant = make_tenant("Acme")
    _bind(tenant, "machine-client")
    event = _person_event("TokenGeneration_Authentication", tenant)
    event["callerContext"]["clientId"] = "machine-client"

    with pytest.raises(identity.TokenRefused, match="machine client"):
        identity.pre_token_generation(event)


def test_an_unexpected_failure_is_refused_in_general_terms_and_logged(database_url, make_tenant, monkeypatch, caplog):
    def database_away(*_args):
        raise OSError("connection refused to 10.0.3.7:5432")

    monkeypatch.setattr(identity.auth, "subject", database_away)

    with pytest.raises(identity.TokenRefused) as refused:
        identity.answer(_person_event("TokenGeneration_Authentication", make_tenant("Acme")))

    assert "10.0.3.7" not in str(refused.value) and "retry" in str(refused.value)
    assert "10.0.3.7" in caplog.text


def test_a_refresh_reads_the_tenant_again_and_is_refused_once_it_is_suspended(database_url, make_tenant):
    tenant = make_tenant("Acme")
    refresh = _person_event("TokenGeneration_RefreshTokens", tenant)
    assert _details(identity.pre_token_generation(copy.deepcopy(refresh)))["accessTokenGeneration"]
    with transaction(tenant_id=tenant) as tx:
        tx.run("UPDATE tenants SET status = 'suspended'")

    with pytest.raises(identity.TokenRefused, match="suspended"):
        identity.pre_token_generation(refresh)


def test_a_client_credentials_grant_gets_its_bound_tenant_and_no_id_token(database_url, make_tenant):
    tenant = make_tenant("Acme")
    _bind(tenant, "7abc123client")

    details = _details(identity.pre_token_generation(_machine_event("7abc123client")))

    assert details["accessTokenGeneration"]["claimsToAddOrOverride"]["custom:tenant_id"] == tenant
    assert "scopesToAdd" not in details["accessTokenGeneration"]  # a client gets what it was allowed, no more
    assert "idTokenGeneration" not in details


@pytest.mark.parametrize(
    "event,reason",
    [
        (lambda t: _machine_event("never-made"), "not bound"),
        (lambda t: _person_event("TokenGeneration_Authentication", None), "not provisioned"),
        (lambda t: _person_event("TokenGeneration_Authentication", "not-a-uuid"), "not provisioned"),
        (
            lambda t: _person_event("TokenGeneration_Authentication", "00000000-0000-4000-8000-000000000000"),
            "not provisioned",
        ),
    ],
)
def test_tokens_for_no_tenant_or_an_unbound_client_are_refused(database_url, make_tenant, event, reason):
    with pytest.raises(identity.TokenRefused, match=reason):
        identity.pre_token_generation(event(make_tenant("Acme")))


def test_a_deleted_client_gets_no_more_tokens(database_url, make_tenant):
    tenant = make_tenant("Acme")
    _bind(tenant, "gone-client")
    with transaction(tenant_id=tenant) as tx:
        tx.run("UPDATE api_clients SET deleted_at = now()")

    with pytest.raises(identity.TokenRefused, match="not bound"):
        identity.pre_token_generation(_machine_event("gone-client"))


def test_the_deployed_function_is_the_same_trigger(database_url, make_tenant):
    tenant = make_tenant("Acme")

    event = deployed_trigger(_person_event("TokenGeneration_Authentication", tenant), None)

    assert _details(event)["accessTokenGeneration"]["claimsToAddOrOverride"]["custom:tenant_id"] == tenant
