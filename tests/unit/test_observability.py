import json
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib import consumers, observability


def _line(message, *args, exc=None):
    record = logging.LogRecord("billing.test", logging.INFO, __file__, 1, message, args, exc)
    return json.loads(observability.JsonFormatter().format(record))


def test_log_lines_are_json_with_the_invocations_fields():
    observability.clear()
    observability.bind(request_id="req-1", tenant_id="t-1", user_id="u-1")
    line = _line("charged %s", 4900)
    observability.clear()

    assert line["message"] == "charged 4900"
    assert (line["level"], line["request_id"], line["tenant_id"], line["user_id"]) == ("INFO", "req-1", "t-1", "u-1")
    assert line["timestamp"].endswith("Z") and line["function"]


def test_tokens_emails_and_card_numbers_never_reach_the_log():
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlLXN0dWZm"
    line = _line(f"Authorization: Bearer {token} for ada.lovelace@customer.test card 4242 4242 4242 4242")
    assert token not in line["message"]
    assert "ada.lovelace" not in line["message"] and "a***@customer.test" in line["message"]
    assert "4242 4242" not in line["message"]


def test_tracing_off_imports_no_xray_and_costs_nothing():
    code = (
        "import sys, os; os.environ.pop('_X_AMZN_TRACE_ID', None)\n"
        "from chalicelib import tracing\n"
        "with tracing.subsegment('x') as s: assert s is None\n"
        "import app\n"
        "bad = [m for m in ('aws_xray_sdk', 'boto3', 'jsonschema', 'pg8000') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=".")
    assert result.returncode == 0, result.stderr


def _documents(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def _dimension_keys(document: dict) -> set[str]:
    return {
        key for directive in document["_aws"]["CloudWatchMetrics"] for keys in directive["Dimensions"] for key in keys
    }


def test_metrics_are_embedded_metric_format_lines_on_stdout(capsys):
    observability.emit_metric("invoice_amount", 4900, "None", TenantId="t-1", PlanId="p-1")
    line = json.loads(capsys.readouterr().out)
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "BillingPlatform"
    assert directive["Metrics"] == [{"Name": "invoice_amount", "Unit": "None"}]
    assert (line["invoice_amount"], line["TenantId"], line["PlanId"]) == (4900, "t-1", "p-1")


def test_a_tenant_and_a_plan_are_searchable_properties_never_dimensions_and_every_metric_has_its_total(capsys):
    observability.emit_metric("invoice_amount", 4900, "None", TenantId="t-1", PlanId="p-1")
    observability.emit_metric("subscription_revenue", 4900, "None", TenantId="t-1", PlanId="p-1", Currency="EUR")
    amount, revenue = _documents(capsys.readouterr().out)

    assert amount["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]  # the stack's total only
    assert revenue["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[], ["Currency"]]
    assert revenue["Currency"] == "EUR" and revenue["TenantId"] == "t-1"


def test_a_batch_writes_one_document_with_counts_summed_and_every_value_kept(capsys):
    with observability.metrics_batch():
        for n, tenant in enumerate(["t-1", "t-1", "t-2"]):
            observability.emit_metric("invoice_amount", 1000 * (n + 1), "None", TenantId=tenant, PlanId=f"p-{n}")
            observability.emit_metric("rebill_failures", 1, TenantId=tenant)
        with observability.metrics_batch():  # a batch inside a batch is part of it
            observability.emit_metric("rebill_failures", 1, TenantId="t-3")
        assert capsys.readouterr().out == ""  # nothing before the batch ends
    (document,) = _documents(capsys.readouterr().out)

    assert document["invoice_amount"] == [1000, 2000, 3000]
    assert document["rebill_failures"] == 4
    assert document["TenantId"] == ["t-1", "t-2", "t-3"] and document["PlanId"] == ["p-0", "p-1", "p-2"]
    assert _dimension_keys(document) == set()
    names = [m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert sorted(names) == ["invoice_amount", "rebill_failures"]


def test_more_than_a_hundred_values_of_a_metric_start_another_document(capsys):
    with observability.metrics_batch():
        for n in range(150):
            observability.emit_metric("invoice_generation_time", n, "Milliseconds", TenantId="t-1")
            observability.emit_metric("rebill_accounts", 1)
    first, second = _documents(capsys.readouterr().out)

    assert first["invoice_generation_time"] == list(range(100)) and first["rebill_accounts"] == 150
    assert second["invoice_generation_time"] == list(range(100, 150)) and "rebill_accounts" not in second
    assert [m["Name"] for m in second["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == ["invoice_generation_time"]


def test_a_worker_threads_metrics_join_the_batch_its_invocation_waits_for(capsys):
    with ThreadPoolExecutor(max_workers=4) as lanes, observability.metrics_batch():
        list(lanes.map(lambda _n: observability.emit_metric("webhook_delivered", 1), range(8)))
    (document,) = _documents(capsys.readouterr().out)
    observability.emit_metric("webhook_delivered", 1)  # after the batch: on its own again

    assert document["webhook_delivered"] == 8
    assert len(_documents(capsys.readouterr().out)) == 1


def test_an_sqs_batch_of_ten_records_writes_one_document_even_when_the_batch_fails(capsys):

    def handle(body: str) -> bool:
        observability.emit_metric("payment_declines", 1, TenantId=f"t-{body}")
        if body == "9":
            raise RuntimeError("this record fails")
        return True

    records = [{"messageId": f"m-{n}", "body": str(n)} for n in range(10)]
    with pytest.raises(consumers.BatchFailed):  # the mapping cannot report items (the default): all retried
        consumers.process_batch(records, "test", handle)
    (document,) = _documents(capsys.readouterr().out)

    assert document["payment_declines"] == 10 and len(document["TenantId"]) == 10
    assert _dimension_keys(document) == set()
