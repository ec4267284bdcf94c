"""A database that asks for a retry, or does not answer, is a retryable 503 with a request id, never a 500."""

import pytest

from chalicelib import idempotency
from chalicelib.config import reset_settings
from chalicelib.db import errors as db_errors
from chalicelib.db import reset_connection


def test_a_serialization_failure_is_retried_once_in_the_unit_of_work(api, catalog):
    attempts = []

    def work(tx):
        attempts.append(tx.scalar("SELECT count(*) FROM plans"))
        if len(attempts) == 1:
            raise db_errors.SerializationFailure("could not serialize access", code="40001")
        return attempts[-1]

    assert idempotency.in_tenant_scope(catalog.id, work) == 3
    assert len(attempts) == 2


def test_a_deadlock_twice_in_a_row_is_not_retried_again(api, catalog):
    calls = []

    def work(_tx):
        calls.append(1)
        raise db_errors.SerializationFailure("deadlock detected", code="40P01")

    with pytest.raises(db_errors.SerializationFailure):
        idempotency.in_tenant_scope(catalog.id, work)
    assert len(calls) == 2


def test_a_request_stuck_behind_a_lock_is_a_503_database_busy_with_a_request_id(
    api, account, catalog, owner_conn, monkeypatch
):
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "300")
    reset_settings()
    reset_connection()
    owner_conn.run("BEGIN")
    owner_conn.run("SELECT id FROM accounts WHERE id = CAST(:a AS uuid) FOR UPDATE", a=account["id"])
    try:
        reply = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)
    finally:
        owner_conn.run("ROLLBACK")
        monkeypatch.delenv("DB_STATEMENT_TIMEOUT_MS")
        reset_settings()
        reset_connection()

    assert reply.status == 503, reply.body
    assert reply.body["error"]["code"] == "database_busy"
    assert reply.body["error"]["request_id"]
    assert reply.headers["Retry-After"] == "1"
    retried = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user)
    assert retried.status == 201, "nothing of the refused request was kept"


def test_an_unreachable_database_is_a_503_with_a_request_id(api, catalog, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/billing")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "1")
    reset_settings()
    reset_connection()
    try:
        reply = api.get("/v1/plans", catalog.user)
    finally:
        monkeypatch.undo()
        reset_settings()
        reset_connection()

    assert reply.status == 503
    assert reply.body["error"]["type"] == "service_unavailable"
    assert reply.body["error"]["request_id"]
