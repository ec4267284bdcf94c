"""Onboarding: the platform operator provisions a tenant and its first admin is invited to the user pool,
once however often it is retried; a fresh stage's operator is bootstrapped by one repeatable command."""

import pytest

from chalicelib import handlers, onboarding
from chalicelib.db import transaction


@pytest.fixture
def operator(make_tenant, cognito):
    tenant_id = make_tenant("Platform", operator=True)
    return tenant_id, cognito.token(tenant_id, "ADMIN")


def _users(cognito, email):
    users = cognito.client.list_users(UserPoolId=cognito.pool_id)["Users"]
    return [u for u in users if u["Username"] == email]


def _groups(cognito, email):
    found = cognito.client.admin_list_groups_for_user(UserPoolId=cognito.pool_id, Username=email)["Groups"]
    return [g["GroupName"] for g in found]


def test_a_new_tenants_first_admin_is_invited_and_the_operator_hears_tenant_created(api, operator, cognito):
    operator_id, token = operator
    body = {"name": "Initech", "email": "billing@initech.test", "plan": "growth", "admin_email": "ada@initech.test"}

    reply = api.post("/v1/tenants", body, token)

    assert reply.status == 201, reply.body
    assert reply.body["admin"] == {"email": "ada@initech.test", "status": "invited"}
    [user] = _users(cognito, "ada@initech.test")
    attributes = {a["Name"]: a["Value"] for a in user["Attributes"]}
    assert attributes["custom:tenant_id"] == reply.body["id"] and user["UserStatus"] == "FORCE_CHANGE_PASSWORD"
    assert _groups(cognito, "ada@initech.test") == ["ADMIN"]
    events = api.get("/v1/notifications?type=tenant.created", token=token).body["data"]
    assert [e["data"]["object"]["id"] for e in events] == [reply.body["id"]]


def test_onboarding_retried_with_its_key_makes_one_tenant_and_one_user(api, operator, cognito):
    _, token = operator
    body = {"name": "Initech", "email": "ada@initech.test", "plan": "standard"}
    key = {"Idempotency-Key": "onboard-ada@initech.test"}

    first = api.post("/v1/tenants", body, token, headers=key)
    again = api.post("/v1/tenants", body, token, headers=key)

    assert first.status == again.status == 201 and again.body["id"] == first.body["id"]
    assert len(_users(cognito, "ada@initech.test")) == 1
    with transaction() as tx:
        assert tx.scalar("SELECT count(*) FROM token_subject(CAST(:t AS uuid), NULL)", t=first.body["id"]) == 1


def test_the_tenant_created_consumer_finishes_an_invitation_and_a_redelivery_changes_nothing(api, operator, cognito):
    _, token = operator
    tenant = api.post("/v1/tenants", {"name": "Initech", "email": "ada@initech.test", "plan": "standard"}, token)
    cognito.client.admin_delete_user(UserPoolId=cognito.pool_id, Username="ada@initech.test")  # as if it failed
    event = {"eventType": "tenant.created", "createdTenantId": tenant.body["id"], "adminEmail": "ada@initech.test"}

    assert handlers.invite_first_admin(event) and handlers.invite_first_admin(event)

    assert len(_users(cognito, "ada@initech.test")) == 1
    assert _groups(cognito, "ada@initech.test") == ["ADMIN"]


def test_an_email_that_signs_in_to_another_tenant_is_refused_before_anything_is_stored(api, operator, cognito, tenant):
    _, token = operator
    cognito.token(tenant.id, "ADMIN", username="taken@acme.test")

    reply = api.post("/v1/tenants", {"name": "Other", "email": "taken@acme.test", "plan": "standard"}, token)

    assert (reply.status, reply.body["error"]["code"]) == (409, "admin_email_taken")
    with transaction() as tx:
        assert tx.scalar("SELECT platform_operator_tenant()") is not None
    assert api.get("/v1/notifications?type=tenant.created", token=token).body["data"] == []


def test_an_unknown_platform_plan_is_a_400_on_plan(api, operator):
    _, token = operator

    reply = api.post("/v1/tenants", {"name": "X", "email": "x@x.test", "plan": "platinum"}, token)

    assert reply.status == 400 and [d["field"] for d in reply.body["error"]["details"]] == ["plan"]


def test_the_operator_bootstrap_makes_the_operator_once_and_finds_it_after(database_url, cognito):
    first = onboarding.bootstrap_operator("Platform", "ops@platform.test")
    again = onboarding.bootstrap_operator("Platform", "ops@platform.test")

    assert first["created"] is True and again["created"] is False
    assert again["tenant_id"] == first["tenant_id"]
    assert len(_users(cognito, "ops@platform.test")) == 1 and _groups(cognito, "ops@platform.test") == ["ADMIN"]
    token = cognito.token(first["tenant_id"], "ADMIN")  # the operator's admins sign in like anyone
    with transaction(tenant_id=first["tenant_id"]) as tx:
        assert tx.scalar("SELECT settings ->> 'platform_operator' FROM tenants") == "true"
    assert token


def test_an_email_of_a_user_with_no_tenant_is_refused_too_and_case_does_not_make_a_second_user(api, operator, cognito):
    _, token = operator
    cognito.client.admin_create_user(UserPoolId=cognito.pool_id, Username="drifter@x.test", MessageAction="SUPPRESS")
    refused = api.post("/v1/tenants", {"name": "D", "email": "drifter@x.test", "plan": "standard"}, token)
    made = api.post("/v1/tenants", {"name": "I", "email": "Ada@Initech.test", "plan": "standard"}, token)
    again = api.post("/v1/tenants", {"name": "I2", "email": "ADA@initech.TEST", "plan": "standard"}, token)

    assert (refused.status, refused.body["error"]["code"]) == (409, "admin_email_taken")
    assert made.status == 201 and made.body["admin"]["status"] == "invited"
    assert (again.status, again.body["error"]["code"]) == (409, "admin_email_taken")
    assert len(_users(cognito, "ada@initech.test")) == 1


def test_only_the_operator_learns_whether_an_email_has_an_account(api, operator, tenant, cognito):
    _, token = operator
    cognito.token(tenant.id, "ADMIN", username="known@acme.test")

    probe = api.post("/v1/tenants", {"name": "P", "email": "known@acme.test", "plan": "platinum"}, tenant.admin)

    assert probe.status == 403 and probe.body["error"]["type"] == "permission_error"


def test_a_first_admin_whose_email_was_taken_meanwhile_is_reported_failed(api, operator, cognito, tenant, monkeypatch):
    _, token = operator
    monkeypatch.setattr(onboarding, "check_admin_free", lambda *_: None)  # as if another request took it after
    cognito.token(tenant.id, "ADMIN", username="raced@acme.test")

    reply = api.post("/v1/tenants", {"name": "R", "email": "raced@acme.test", "plan": "standard"}, token)

    assert reply.status == 201 and reply.body["admin"] == {"email": "raced@acme.test", "status": "failed"}
