"""docs/pricing.md's worked examples each name the test that computes their figures: those tests exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_pricing_doc_names_exists_in_the_price_model_tests():
    doc = (ROOT / "docs" / "pricing.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", doc))
    tests = (ROOT / "tests" / "integration" / "test_price_models.py").read_text()
    defined = set(re.findall(r"^def (test_[a-z0-9_]+)\(", tests, re.MULTILINE))
    assert len(named) >= 8
    assert named <= defined, named - defined
