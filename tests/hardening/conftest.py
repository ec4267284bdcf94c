"""The app served for real (chalice local on 127.0.0.1, a moto server, its own database) for the
hardening tests that need HTTP, and how big the long runs are.

`make test` runs every hardening part at a size that fits the suite; `make hardening`
sets HARDENING_SCALE=full for the long runs (more fuzzing examples, a 60 s load).
"""

import os

import pytest

from devtools.stack import Stack
from tests.conftest import copy_of_template, drop_database

FULL = os.environ.get("HARDENING_SCALE") == "full"


@pytest.fixture(scope="module")
def stack(admin_url, template_url, tmp_path_factory):
    name, url = copy_of_template(admin_url)
    try:
        with Stack(url, tmp_path_factory.mktemp("stack")) as running:
            yield running
    finally:
        drop_database(admin_url, name)
