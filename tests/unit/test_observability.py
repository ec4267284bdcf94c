import json
import logging
import subprocess
import sys

from chalicelib import observability


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


def test_metrics_are_embedded_metric_format_lines_on_stdout(capsys):
    observability.emit_metric("invoice_amount", 4900, "None", TenantId="t-1", PlanId="p-1")
    line = json.loads(capsys.readouterr().out)
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "BillingPlatform"
    assert directive["Dimensions"] == [["PlanId", "TenantId"]]
    assert directive["Metrics"] == [{"Name": "invoice_amount", "Unit": "None"}]
    assert (line["invoice_amount"], line["TenantId"], line["PlanId"]) == (4900, "t-1", "p-1")
