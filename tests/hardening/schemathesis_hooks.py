"""Schemathesis extension for tests/hardening/test_api_fuzzing.py (loaded through SCHEMATHESIS_HOOKS).

The document's ``iso-4217`` format is ours, so schemathesis has no generator for it and would
draw currencies from the pattern alone: almost every ``[A-Z]{3}`` is no currency, so nearly
every generated account and plan would be a (documented, accepted) 400 and the stateful phase
would rarely get an account to follow. Positive cases draw real codes instead; negative ones
still violate the schema in every other way.
"""

import schemathesis
from hypothesis import strategies as st

from chalicelib.billing import currencies

schemathesis.openapi.format("iso-4217", st.sampled_from(sorted(currencies.EXPONENTS)))
