"""Which origins a stage allows: its settings, the checked-in stages, and what packaging refuses."""

import json

import pytest

from chalicelib import cors
from chalicelib.config import cors_origins, get_settings, reset_settings
from devtools import package


@pytest.fixture
def stage_env(monkeypatch):
    def load(stage: str, origins: str):
        monkeypatch.setenv("STAGE", stage)
        monkeypatch.setenv("CORS_ALLOWED_ORIGINS", origins)
        reset_settings()
        return get_settings()

    yield load
    reset_settings()


@pytest.mark.parametrize("origins", ["*", "https://app.example.com,*", "https://app.example.com:*"])
def test_production_settings_refuse_to_load_with_a_wildcard_origin(stage_env, origins):
    with pytest.raises(ValueError, match="production names exact https origins only"):
        stage_env("prod", origins)


def test_production_settings_refuse_plain_http_origins(stage_env):
    with pytest.raises(ValueError, match="production"):
        stage_env("production", "http://app.example.com")


def test_production_settings_take_several_exact_https_origins(stage_env):
    settings = stage_env("prod", " https://App.Example.com/ , https://admin.example.com")

    assert settings.cors_allowed_origins == ("https://app.example.com", "https://admin.example.com")


def test_other_stages_may_allow_localhost_on_any_port_or_every_origin(stage_env):
    assert stage_env("dev", "http://localhost:*,*").cors_allowed_origins == ("http://localhost:*", "*")


@pytest.mark.parametrize("entry", ["app.example.com", "https://app.example.com/spa", "null", "https://*.example.com"])
def test_an_entry_that_is_no_origin_is_refused_in_every_stage(entry):
    with pytest.raises(ValueError, match="is not an origin"):
        cors_origins(entry, "dev")


def test_no_setting_allows_no_origin():
    assert cors_origins("", "prod") == ()
    assert not cors.allows("https://app.example.com", ())


def test_a_port_wildcard_allows_any_port_of_that_scheme_and_host_only():
    local = cors_origins("http://localhost:*", "local")

    assert all(cors.allows(o, local) for o in ("http://localhost:5173", "http://localhost:3000", "http://localhost"))
    for origin in ("https://localhost:5173", "http://localhost.evil.net", "http://localhost:5173.evil.net", None, ""):
        assert not cors.allows(origin, local), origin


def test_an_exact_origin_allows_exactly_that_origin():
    exact = cors_origins("https://app.example.com", "prod")

    assert cors.allows("https://app.example.com", exact)
    for origin in ("https://app.example.com:443", "https://app.example.com.evil.net", "http://app.example.com"):
        assert not cors.allows(origin, exact), origin


def test_every_stage_in_the_chalice_config_names_origins_its_settings_accept():
    config = json.loads((package.ROOT / ".chalice" / "config.json").read_text())

    origins = {stage: package.stage_cors_origins(stage, config) for stage in config["stages"]}

    assert cors.allows("http://localhost:5173", origins["local"])
    assert cors.allows("http://127.0.0.1:8080", origins["local"])
    assert len(origins["prod"]) >= 2 and all(o.startswith("https://") and "*" not in o for o in origins["prod"])


def test_packaging_refuses_a_production_stage_that_allows_every_origin():
    config = {"stages": {"prod": {"environment_variables": {"STAGE": "prod", "CORS_ALLOWED_ORIGINS": "*"}}}}

    with pytest.raises(ValueError, match="production"):
        package.stage_cors_origins("prod", config)


def test_api_gateways_own_errors_carry_the_first_exact_origin_and_nothing_without_one():
    responses = package.cors_gateway_responses(("http://localhost:*", "https://app.dev.example.com", "https://b.test"))

    assert set(responses) == {"DEFAULT_4XX", "DEFAULT_5XX"}
    for response in responses.values():
        headers = response["responseParameters"]
        assert headers["gatewayresponse.header.Access-Control-Allow-Origin"] == "'https://app.dev.example.com'"
        assert headers["gatewayresponse.header.Vary"] == "'Origin'"
        assert response["responseTemplates"] == {"application/json": '{"message":$context.error.messageString}'}
    assert package.cors_gateway_responses(()) == {}
    assert package.cors_gateway_responses(("http://localhost:*", "*")) == {}
