import pytest

from chalicelib.db.queries import parse_query_file


def test_named_queries_are_split_on_their_headers():
    text = "-- name: one\n-- a comment\nSELECT 1;\n\n-- name: two\nSELECT :x\n  FROM t;\n"
    assert parse_query_file(text) == {"one": "SELECT 1", "two": "SELECT :x\n  FROM t"}


def test_a_query_name_defined_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        parse_query_file("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
