import re

from devtools import openapi


def test_committed_openapi_document_is_current():
    assert openapi.DOCUMENT.read_text() == openapi.render(), "run: python -m devtools.openapi"


def test_openapi_paths_and_methods_are_exactly_the_apps_routes():
    from app import app

    # OPTIONS is every path's CORS preflight (chalicelib/cors.py), not an operation of the API.
    routes = {(path, m.lower()) for path, methods in app.routes.items() for m in methods if m != "OPTIONS"}
    documented = {(path, method) for path, methods in openapi.build()["paths"].items() for method in methods}
    assert documented == routes


def test_openapi_document_is_valid_openapi_3_1():
    from openapi_spec_validator import validate

    validate(openapi.build())


def test_every_request_schema_file_is_documented():
    document = openapi.DOCUMENT.read_text()
    for schema in openapi.SCHEMA_DIR.glob("*.json"):
        if schema.stem.startswith("event_"):  # message schemas, not request bodies
            continue
        title = re.escape(f'"title": "{schema.stem}"')
        assert re.search(title, document), schema.stem
