import json

from chalice.test import Client

from app import app
from chalicelib.db import migrate


def test_health_reports_database_reachable_and_migration_version(database_url):
    with Client(app) as client:
        response = client.http.get("/v1/health")

    body = json.loads(response.body)
    assert response.status_code == 200
    assert body["database"] == {"reachable": True, "migration_version": migrate.discover()[-1].version}


def test_health_is_503_not_500_when_the_database_is_unreachable(database_url, monkeypatch, tmp_path):
    from tests.conftest import _use_database

    _use_database(f"postgresql://postgres@/nope?host={tmp_path}")
    with Client(app) as client:
        response = client.http.get("/v1/health")

    assert response.status_code == 503
    assert json.loads(response.body)["database"]["reachable"] is False


def test_every_invocation_writes_one_log_line_with_its_request_id(database_url, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="billing.invocation")
    with Client(app) as client:
        client.http.get("/v1/health")
    lines = [r for r in caplog.records if r.name == "billing.invocation"]
    assert len(lines) == 1
    assert "GET /v1/health -> 200" in lines[0].getMessage()
