"""Demo data for local runs: one tenant with a price list and one customer account.

Idempotent: a second run changes nothing. Goes through the app role and the tenant
scope like any request would.
"""

from chalicelib.db import transaction

DEMO_TENANT_ID = "00000000-0000-4000-8000-000000000001"
DEMO_ACCOUNT_ID = "00000000-0000-4000-8000-0000000000a1"

PLANS = [
    # code, name, interval, amount (minor units), usage prices
    ("basic", "Basic", "month", 900, []),
    ("basic", "Basic (yearly)", "year", 9000, []),
    ("pro", "Pro", "month", 4900, [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 1}]),
    ("pro", "Pro (yearly)", "year", 49000, [{"metric": "api_calls", "aggregation": "sum", "unit_amount": 1}]),
]


def seed() -> None:
    with transaction(tenant_id=DEMO_TENANT_ID) as tx:
        tx.run(
            "INSERT INTO tenants (id, name, email, plan_tier, settings)"
            " VALUES (:id, 'Demo SaaS', 'billing@demo.test', 'growth', '{\"platform_operator\": true}')"
            " ON CONFLICT (id) DO NOTHING",
            id=DEMO_TENANT_ID,
        )
        for code, name, interval, amount, usage in PLANS:
            tx.run(
                "INSERT INTO plans (code, name, interval, amount, currency, usage_prices)"
                " VALUES (:code, :name, :interval, :amount, 'USD', CAST(:usage AS jsonb))"
                " ON CONFLICT (tenant_id, code, interval, interval_count) DO NOTHING",
                code=code,
                name=name,
                interval=interval,
                amount=amount,
                usage=_json(usage),
            )
        tx.run(
            "INSERT INTO accounts (id, email, name, currency, plan_id)"
            " SELECT :id, 'ada@customer.test', 'Ada Customer', 'USD', id FROM plans"
            " WHERE code = 'pro' AND interval = 'month'"
            " ON CONFLICT (id) DO NOTHING",
            id=DEMO_ACCOUNT_ID,
        )


def _json(value) -> str:
    import json

    return json.dumps(value)


if __name__ == "__main__":
    seed()
    print(f"seeded demo tenant {DEMO_TENANT_ID}")
