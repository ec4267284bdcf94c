"""A batch's metrics are one EMF document, with no tenant or plan among its dimensions."""

import json
from datetime import UTC, datetime, timedelta

from chalice.test import Client

from app import app
from devtools.pump import lambda_event
from tests import billing

PAST = datetime.now(UTC) - timedelta(days=40)


def _emf_documents(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


def _renewal(tenant: str, account: str) -> dict:
    due = billing.state(tenant, account)["next_billing_at"]
    body = {"tenantId": tenant, "accountId": account, "kind": "renewal", "dueAt": due.isoformat()}
    return {"MessageId": f"renew-{account}", "ReceiptHandle": "r", "Body": json.dumps(body)}


def test_a_rebill_batch_of_ten_accounts_across_two_tenants_writes_exactly_one_emf_document(
    make_tenant, messaging, gateway, capsys
):
    records = []
    for name in ("Acme", "Initech"):
        tenant = make_tenant(name)
        plan = billing.plan(tenant)
        for n in range(5):
            account = billing.subscribed_account(tenant, plan, PAST)
            billing.usage(tenant, account, PAST + timedelta(days=2), 10 + n, f"u-{account}")
            records.append(_renewal(tenant, account))
    capsys.readouterr()

    with Client(app) as client:
        result = client.lambda_.invoke("rebill_processor", lambda_event(records, "arn"))
    (document,) = _emf_documents(capsys.readouterr().out)

    assert result.payload == {"batchItemFailures": []}
    assert len(gateway.charges) == 10
    directives = document["_aws"]["CloudWatchMetrics"]
    dimensions = {key for d in directives for keys in d["Dimensions"] for key in keys}
    assert not dimensions & {"TenantId", "PlanId"}
    amounts = document["invoice_amount"]
    assert isinstance(amounts, list) and len(amounts) == 10  # one value per invoice, for percentiles
    assert len(document["TenantId"]) == 2 and len(document["PlanId"]) == 2  # properties: the sorted lists
