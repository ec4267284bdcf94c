"""Who a verified token's claims describe, as API Gateway's authorizer hands them over when deployed
(VERIFY_JWT off: ``scope`` a string, ``cognito:groups`` flattened to "[ADMIN USER]"): the same
answers as the app's own verification gives locally."""

import pytest

from chalicelib import auth, errors

TENANT = "3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10"
PEOPLE = ("spa-client",)


def _person(**changes) -> dict:
    claims = {
        "sub": "u-1",
        "token_use": "access",
        "client_id": "spa-client",
        "scope": "aws.cognito.signin.user.admin billing/read billing/write billing/usage.write",
        "cognito:groups": "[USER]",
        "custom:tenant_id": TENANT,
        "username": "ada",
    }
    return {**claims, **changes}


def _machine(**changes) -> dict:
    claims = {
        "sub": "m-1",
        "token_use": "access",
        "client_id": "m-1",
        "scope": "billing/usage.write",
        "custom:tenant_id": TENANT,
    }
    return {**claims, **changes}


@pytest.fixture
def bound(monkeypatch):
    bindings = {"m-1": TENANT}
    monkeypatch.setattr(auth, "client_tenant", lambda client_id: bindings.get(client_id))
    return bindings


def test_api_gateways_flattened_groups_and_scope_string_make_the_same_person():
    principal = auth.principal_from_claims(_person(**{"cognito:groups": "[ADMIN USER]"}), PEOPLE)

    assert principal.groups == {"ADMIN", "USER"} and not principal.is_machine
    assert principal.scopes >= {"billing/read", "billing/write", "billing/usage.write"}
    principal.require(auth.WRITE)


def test_a_user_lacking_the_admin_group_or_the_scope_is_refused_with_what_is_missing():
    with pytest.raises(errors.Forbidden, match="ADMIN role"):
        auth.principal_from_claims(_person(), PEOPLE).require(auth.ADMIN)
    with pytest.raises(errors.Forbidden) as missing:
        auth.principal_from_claims(_person(scope="billing/read"), PEOPLE).require(auth.USAGE)
    assert missing.value.code == "insufficient_scope"


def test_a_bound_machine_gets_its_scopes_and_no_people_routes(bound):
    principal = auth.principal_from_claims(_machine(), PEOPLE)

    assert principal.is_machine and principal.user_id == "m-1" and principal.groups == frozenset()
    principal.require(auth.USAGE)
    with pytest.raises(errors.Forbidden) as people_only:
        principal.require(auth.PEOPLE_ADMIN)
    assert people_only.value.code == "people_only"


@pytest.mark.parametrize(
    "claims,refusal",
    [
        (_person(token_use="id"), errors.Unauthenticated),
        (_person(client_id=None), errors.Unauthenticated),
        (_machine(client_id="unbound"), errors.Unauthenticated),
        (_machine(**{"custom:tenant_id": "00000000-0000-4000-8000-000000000000"}), errors.Unauthenticated),
        (_person(**{"custom:tenant_id": None}), errors.Forbidden),
        (_person(**{"cognito:groups": "[]"}), errors.Forbidden),
    ],
)
def test_claims_that_do_not_hold_together_are_refused(bound, claims, refusal):
    with pytest.raises(refusal):
        auth.principal_from_claims(claims, PEOPLE)


def test_deployed_the_authorizers_claims_are_read_from_the_request_context(bound, monkeypatch):
    monkeypatch.setenv("VERIFY_JWT", "false")
    monkeypatch.setenv("COGNITO_CLIENT_IDS", "spa-client")
    from chalicelib.config import reset_settings

    reset_settings()
    try:
        principal = auth.authenticate({}, {"authorizer": {"claims": _machine()}})
        with pytest.raises(errors.Unauthenticated):
            auth.authenticate({"authorization": "Bearer forged"}, {})
    finally:
        reset_settings()
    assert principal.tenant_id == TENANT and principal.client_id == "m-1"
