"""The WAF and monitoring modules, planned from a small root module against local AWS.

WAF: no rule refuses a body for being longer than WAF reads (16 KB on API Gateway),
and its per-IP limits are each route's API throttle over WAF's 5-minute window.
Monitoring: alarms reach people, a failed scheduled run alarms within the hour, and
the dashboard has the error log and the KPIs.
"""

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.test_packaging import MIRROR, _planned, _terraform, local_aws  # noqa: F401 (a fixture)

INFRA = Path(__file__).resolve().parents[2] / "infra"
WAF_INSPECTS_BYTES = 16 * 1024  # of a body, on API Gateway, unless the web ACL pays for more (64 KB at most)
APP_MAX_BODY_BYTES = 256 * 1024  # chalicelib/config.py: MAX_BODY_BYTES; over it the app answers 413

THROTTLE = {
    "*/*": {"rate": 100, "burst": 200},
    "v1/events/POST": {"rate": 500, "burst": 1000},
    "v1/accounts/{account_id}/rebill/POST": {"rate": 5, "burst": 10},
}
FUNCTIONS = ["billing-dev-api_handler", "billing-dev-rebill_schedule", "billing-dev-generate_invoice"]
LOG_GROUPS = [f"/aws/lambda/{f}" for f in FUNCTIONS]
EMAILS = ["oncall@example.com", "billing-ops@example.com"]
NAMESPACE = "BillingPlatform/billing-dev"  # the stack's EMF namespace (METRICS_NAMESPACE)
HOOKS = ["https://hooks.example.com/services/T000/B000/xyz"]
FAILED = "billing-dev-failed-invocations"
OPS_TOPIC = "arn:aws:sns:us-east-1:123456789012:billing-dev-ops"
ERROR_QUERY = 'fields @timestamp, function, message | filter level = "ERROR" | sort @timestamp desc | limit 50'


def _hcl(value) -> str:
    """A Python value as an HCL expression: JSON is one (HCL objects take quoted keys and ":")."""
    return json.dumps(value)


def _root(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True)
    shutil.copytree(INFRA / "modules" / "waf", directory / "modules" / "waf")
    shutil.copytree(INFRA / "modules" / "monitoring", directory / "modules" / "monitoring")
    provider = '    aws = { source = "hashicorp/aws", version = ">= 5.0, < 6.0" }\n'
    (directory / "main.tf").write_text(f"terraform {{\n  required_providers {{\n{provider}  }}\n}}\n{body}")
    return directory


def _waf(name: str, block: bool, throttle: dict) -> str:
    return f"""
module "{name}" {{
  source       = "./modules/waf"
  name         = "{name}"
  stage_arn    = "arn:aws:apigateway:us-east-1::/restapis/a1b2c3d4e5/stages/api"
  block        = {str(block).lower()}
  api_throttle = {_hcl(throttle)}
  stage_name   = "api"
}}
"""


def _monitoring(**overrides) -> str:
    inputs = {
        "name": "billing-dev",
        "alarm_topic_arn": _hcl(OPS_TOPIC),
        "function_names": _hcl(FUNCTIONS),
        "queue_names": _hcl(["billing-dev-rebill"]),
        "dlq_names": _hcl(["billing-dev-rebill-dlq"]),
        "api_name": '"billing-dev"',
        "db_cluster_id": '"billing-dev"',
        "error_rate_percent": "5",
        "db_max_connections": "800",
        "alarm_emails": _hcl(EMAILS),
        "alarm_https_endpoints": _hcl(HOOKS),
        "failed_invocations_queue_name": _hcl(FAILED),
        "scheduled_function_names": _hcl(["billing-dev-rebill_schedule"]),
        "log_group_names": _hcl(LOG_GROUPS),
        "metrics_namespace": _hcl(NAMESPACE),
        **overrides,
    }
    inputs["name"] = _hcl(inputs["name"])
    lines = "\n".join(f"  {key} = {value}" for key, value in inputs.items())
    return f'\nmodule "monitoring" {{\n  source = "./modules/monitoring"\n{lines}\n}}\n'


@pytest.fixture(scope="module")
def planned(local_aws, tmp_path_factory):  # noqa: F811 (the imported fixture)
    """The planned resources of both modules: prod's WAF (block), dev's (count, the root's default throttle), one
    with the stage default only, and the monitoring of a stage (its ops topic a made-up ARN)."""
    scratch = tmp_path_factory.mktemp("waf-and-monitoring")
    body = (
        _waf("waf", True, THROTTLE)
        + _waf("waf_dev", False, {k: v for k, v in THROTTLE.items() if k != "v1/accounts/{account_id}/rebill/POST"})
        + _waf("waf_default_only", True, {"*/*": THROTTLE["*/*"]})
        + _monitoring()
    )
    root = _root(scratch / "root", body)
    _terraform(root, scratch, ["terraform", "init", "-backend=false", "-input=false", "-no-color"])
    command = ["terraform", "plan", "-input=false", "-no-color", "-lock=false", "-out=plan.bin"]
    _terraform(root, scratch, command, env_extra=local_aws)
    plan = json.loads(_terraform(root, scratch, ["terraform", "show", "-json", "plan.bin"], env_extra=local_aws))
    return _planned(plan)


def _rules(planned: dict, module: str) -> dict:
    return {rule["name"]: rule for rule in planned[f"module.{module}.aws_wafv2_web_acl.api"]["rule"]}


def _only(blocks: list) -> dict:
    assert len(blocks) == 1, blocks
    return blocks[0]


def _route(statement: dict) -> tuple[str, str]:
    """(method, path regex) of an AND of the method's byte match and the path's regex match."""
    method, path = _only(statement["and_statement"])["statement"]
    match = _only(method["byte_match_statement"])
    assert (match["positional_constraint"], _only(match["field_to_match"])["method"]) == ("EXACTLY", [{}])
    regex = _only(path["regex_match_statement"])
    assert _only(regex["field_to_match"])["uri_path"] == [{}]
    return match["search_string"], regex["regex_string"]


def _scope(rule: dict) -> tuple[str, str]:
    """(method, path regex) a rate-based rule's scope-down limits it to."""
    return _route(_only(_only(_only(rule["statement"])["rate_based_statement"])["scope_down_statement"]))


def _kind(action: dict) -> str:
    """Which action (block, count, none...) an action or override block holds."""
    (kind,) = [name for name, blocks in action.items() if blocks]
    return kind


def _walk(value):
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from _walk(child)


def _usage_batch(account_id: str) -> dict:
    """100 events as a metering agent sends them: what was used, and where (properties the app keeps)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "events": [
            {
                "event_id": f"req-{uuid.uuid4()}",
                "account_id": account_id,
                "metric": "api_calls",
                "quantity": 1 + i % 7,
                "timestamp": now,
                "properties": {
                    "endpoint": "/v2/documents/search",
                    "http_method": "POST",
                    "region": "eu-west-1",
                    "status": "200",
                    "client": "ingest-worker-3.prod.customer.test",
                },
            }
            for i in range(100)
        ]
    }


def test_a_hundred_event_usage_batch_is_over_wafs_inspection_limit_and_a_valid_body_for_the_app():
    from chalicelib import validation

    batch = _usage_batch(str(uuid.uuid4()))
    raw = json.dumps(batch).encode()

    assert WAF_INSPECTS_BYTES < len(raw) < APP_MAX_BODY_BYTES
    # The app's own body parsing (its 413 over MAX_BODY_BYTES among it) and its schema.
    assert validation.parse_json_body(raw, "application/json") == batch
    assert validation.validate("usage_event_batch", batch) is batch


def test_the_app_accepts_the_hundred_event_batch_that_wafs_body_size_rule_refused(api, catalog):
    reply = api.post(
        "/v1/accounts", {"email": "ada@customer.test", "name": "Ada", "plan": "pro", "currency": "USD"}, catalog.user
    )
    account = reply.body
    assert api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).status == 201
    raw = json.dumps(_usage_batch(account["id"])).encode()
    assert len(raw) > WAF_INSPECTS_BYTES

    answer = api.post("/v1/events", token=catalog.user, raw=raw)

    assert answer.status == 200, answer.body
    assert (answer.body["accepted"], answer.body["rejected"]) == (100, 0)


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
@pytest.mark.parametrize("module", ["waf", "waf_dev", "waf_default_only"])
def test_no_waf_rule_refuses_a_body_for_being_longer_than_waf_inspects(planned, module):
    acl = planned[f"module.{module}.aws_wafv2_web_acl.api"]
    for node in _walk(acl["rule"]):
        if isinstance(node, dict):
            assert not node.get("size_constraint_statement"), node
            assert node.get("oversize_handling") != "MATCH", node
    assert "body-over-256kb" not in _rules(planned, module)
    # The common rule set's 8 KB body rule only counts; the managed groups follow the stage's mode.
    common = _rules(planned, module)["AWSManagedRulesCommonRuleSet"]
    group = _only(_only(common["statement"])["managed_rule_group_statement"])
    override = _only(group["rule_action_override"])
    assert (override["name"], _kind(_only(override["action_to_use"]))) == ("SizeRestrictions_BODY", "count")
    managed = [rule for name, rule in _rules(planned, module).items() if name.startswith("AWSManagedRules")]
    assert {_kind(_only(rule["override_action"])) for rule in managed} == {"count" if module == "waf_dev" else "none"}


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_each_throttled_route_has_a_per_ip_limit_of_its_whole_api_capacity_over_five_minutes(planned):
    rules = _rules(planned, "waf")
    events, rebill = rules["per-ip-rate-v1-events-POST"], rules["per-ip-rate-v1-accounts-account_id-rebill-POST"]
    for rule, rate in ((events, 500), (rebill, 5)):
        limit = _only(_only(rule["statement"])["rate_based_statement"])
        assert (limit["limit"], limit["evaluation_window_sec"], limit["aggregate_key_type"]) == (rate * 300, 300, "IP")
        assert _kind(_only(rule["action"])) == "block"  # prod blocks
    # Default endpoint (/api/...) and a custom domain at its root (/...); a path parameter is one segment.
    assert _scope(events) == ("POST", "^(/api)?/v1/events$")
    assert _scope(rebill) == ("POST", "^(/api)?/v1/accounts/[^/]+/rebill$")
    default = _only(_only(rules["per-ip-rate-default"]["statement"])["rate_based_statement"])
    assert (default["limit"], default["evaluation_window_sec"]) == (100 * 300, 300)
    assert not [name for name in rules if "per-ip-rate-limit" in name]  # the one 2,000 / 5 min rule is gone


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_the_route_regexes_take_the_stage_prefixed_and_custom_domain_paths_and_nothing_else(planned):
    import re

    rules = _rules(planned, "waf")
    regexes = {name: _scope(rule)[1] for name, rule in rules.items() if name.startswith("per-ip-rate-v1-")}
    events, rebill = regexes["per-ip-rate-v1-events-POST"], regexes["per-ip-rate-v1-accounts-account_id-rebill-POST"]
    for path in ("/api/v1/events", "/v1/events"):
        assert re.search(events, path)
    for path in ("/api/v1/events/x", "/other/v1/events", "/api/v1/eventsX", "/api/v1/accounts/a/v1/events"):
        assert not re.search(events, path), path
    assert re.search(rebill, "/api/v1/accounts/3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10/rebill")
    assert not re.search(rebill, "/api/v1/accounts/a/b/rebill")


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_the_default_rule_counts_every_route_but_those_with_a_throttle_of_their_own(planned):
    rules = _rules(planned, "waf")
    label = _only(rules["throttled-routes"]["rule_label"])["name"]
    tagger = _only(rules["throttled-routes"]["statement"])
    assert _kind(_only(rules["throttled-routes"]["action"])) == "count"  # it only labels, in prod too
    tagged = {_route(statement) for statement in _only(tagger["or_statement"])["statement"]}
    assert tagged == {("POST", "^(/api)?/v1/events$"), ("POST", "^(/api)?/v1/accounts/[^/]+/rebill$")}
    default = _only(_only(rules["per-ip-rate-default"]["statement"])["rate_based_statement"])
    excluded = _only(_only(_only(default["scope_down_statement"])["not_statement"])["statement"])
    assert _only(excluded["label_match_statement"]) == {"scope": "LABEL", "key": label}
    # The tagger runs before the default rule; every priority is unique.
    priorities = [rule["priority"] for rule in rules.values()]
    assert len(set(priorities)) == len(priorities)
    assert rules["throttled-routes"]["priority"] < rules["per-ip-rate-default"]["priority"]
    # One route: its AND alone (OR wants two); no route of its own: the default counts everything.
    dev = _rules(planned, "waf_dev")
    assert _route(_only(dev["throttled-routes"]["statement"])) == ("POST", "^(/api)?/v1/events$")
    assert _kind(_only(dev["per-ip-rate-default"]["action"])) == "count"  # dev counts
    assert _kind(_only(dev["per-ip-rate-v1-events-POST"]["action"])) == "count"
    alone = _rules(planned, "waf_default_only")
    assert set(alone) - {r for r in alone if r.startswith("AWSManagedRules")} == {"per-ip-rate-default"}
    assert _only(_only(alone["per-ip-rate-default"]["statement"])["rate_based_statement"])["scope_down_statement"] == []


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_alarms_reach_people_by_email_and_https(planned):
    subscriptions = {
        (s["protocol"], s["endpoint"]): s
        for address, s in planned.items()
        if address.startswith("module.monitoring.aws_sns_topic_subscription.")
    }
    assert set(subscriptions) == {("email", e) for e in EMAILS} | {("https", h) for h in HOOKS}
    assert {s["topic_arn"] for s in subscriptions.values()} == {OPS_TOPIC}
    assert subscriptions[("https", HOOKS[0])]["endpoint_auto_confirms"] is False


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_the_5xx_alarm_wants_more_than_ten_errors_in_each_of_three_periods(planned):
    alarm = planned["module.monitoring.aws_cloudwatch_metric_alarm.api_5xx"]
    assert (alarm["threshold"], alarm["evaluation_periods"], alarm["datapoints_to_alarm"]) == (10, 3, 3)
    assert (alarm["comparison_operator"], alarm["period"], alarm["statistic"]) == ("GreaterThanThreshold", 300, "Sum")


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_a_failed_scheduled_run_alarms_within_the_hour_and_says_how_to_rerun_it(planned):
    alarm = planned["module.monitoring.aws_cloudwatch_metric_alarm.failed_invocations"]
    assert (alarm["namespace"], alarm["metric_name"], alarm["dimensions"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": FAILED},
    )
    assert (alarm["statistic"], alarm["threshold"], alarm["period"], alarm["evaluation_periods"]) == (
        "Maximum",
        0,
        300,
        1,
    )
    assert "original EventBridge event" in alarm["alarm_description"]
    assert "rebill_schedule is idempotent" in alarm["alarm_description"]
    assert len(alarm["alarm_description"]) <= 1024  # CloudWatch's limit
    errors = planned['module.monitoring.aws_cloudwatch_metric_alarm.scheduled_errors["billing-dev-rebill_schedule"]']
    assert (errors["namespace"], errors["metric_name"], errors["dimensions"]) == (
        "AWS/Lambda",
        "Errors",
        {"FunctionName": "billing-dev-rebill_schedule"},
    )
    assert (errors["statistic"], errors["threshold"], errors["period"], errors["evaluation_periods"]) == (
        "Sum",
        0,
        300,
        1,
    )
    assert not [a for a in planned if "scheduled_errors" in a and "rebill_schedule" not in a]


def _span(widget: dict, start: str, size: str) -> range:
    return range(widget[start], widget[start] + widget[size])


def _dashboard(planned: dict) -> list[dict]:
    return json.loads(planned["module.monitoring.aws_cloudwatch_dashboard.this"]["dashboard_body"])["widgets"]


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_the_dashboard_lists_the_functions_latest_error_lines_full_width(planned):
    widgets = _dashboard(planned)
    log = _only([w for w in widgets if w["type"] == "log"])
    sources, query = log["properties"]["query"].rsplit(" | fields ", 1)
    assert "fields " + query == ERROR_QUERY
    assert sources.split(" | ") == [f"SOURCE '{g}'" for g in LOG_GROUPS]
    assert (log["x"], log["width"]) == (0, 24)
    assert log["y"] >= max(w["y"] + w["height"] for w in widgets if w is not log)  # below every other widget
    assert log["properties"]["view"] == "table"


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_the_dashboard_has_invoice_generation_time_concurrency_and_error_rates_and_no_overlaps(planned):
    widgets = _dashboard(planned)
    by_title = {w["properties"].get("title"): w for w in widgets}
    assert {"API", "API latency p99", "Lambda errors", "Lambda duration p95", "Business KPIs", "Queues", "DLQs"} <= set(
        by_title
    )
    # The app's EMF metrics (chalicelib/observability.py) have no tenant or plan dimension: one series per
    # stack, read as the plain metric of the stack's namespace (no SEARCH over per-tenant series).
    invoice = by_title["Invoice generation time (ms per invoice)"]["properties"]["metrics"]
    assert [(m[0], m[1], m[2]["stat"]) for m in invoice] == [
        (NAMESPACE, "invoice_generation_time", "p95"),
        (NAMESPACE, "invoice_generation_time", "Average"),
    ]
    kpis = by_title["Business KPIs"]["properties"]["metrics"]
    assert all(len(m) == 3 and m[0] == NAMESPACE for m in kpis)  # namespace, name, options: no dimensions
    assert {"invoice_amount", "rebill_failures", "payment_declines"} <= {m[1] for m in kpis}
    (revenue,) = by_title["Subscription revenue by currency"]["properties"]["metrics"]
    assert revenue[0]["expression"].startswith(f"SEARCH('{{{NAMESPACE},Currency}}")
    concurrency = by_title["Lambda concurrency (max)"]["properties"]["metrics"]
    assert concurrency == [
        ["AWS/Lambda", "ConcurrentExecutions", "FunctionName", f, {"stat": "Maximum"}] for f in FUNCTIONS
    ]
    api = by_title["API error %"]["properties"]["metrics"]
    hidden = {m[-1]["id"]: m[1] for m in api if isinstance(m[0], str)}
    assert hidden == {"requests": "Count", "e5xx": "5XXError", "e4xx": "4XXError"}
    assert {"expression": "IF(requests > 0, 100 * e5xx / requests, 0)", "label": "5XX %", "id": "pct5xx"} in [
        m[0] for m in api
    ]
    lambda_pct = by_title["Lambda error %"]["properties"]["metrics"]
    labels = {m[0]["label"]: m[0]["expression"] for m in lambda_pct if isinstance(m[0], dict)}
    assert set(labels) == {*FUNCTIONS, "all functions"}
    ids = {m[-1]["id"]: (m[1], m[3]) for m in lambda_pct if isinstance(m[0], str)}
    for function, expression in labels.items():
        if function != "all functions":
            errors, invocations = expression.split("100 * ")[1].split(", 0)")[0].split(" / ")
            assert (ids[errors], ids[invocations]) == (("Errors", function), ("Invocations", function))
    assert labels["all functions"].count("SUM([") == 3
    # No two widgets share a cell of the 24-column grid.
    cells = [(x, y) for w in widgets for x in _span(w, "x", "width") for y in _span(w, "y", "height")]
    assert len(cells) == len(set(cells))
    assert all(w["x"] + w["width"] <= 24 for w in widgets)


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_the_apps_metric_alarms_read_the_stacks_total_series_with_no_dimension(planned):
    # chalicelib/observability.py publishes every metric with the empty dimension set (the stack's total);
    # an alarm with a dimension (a tenant, a plan) would watch a series that no longer exists.
    app_alarms = [
        a for k, a in planned.items() if k.startswith("module.monitoring.aws_cloudwatch_metric_alarm.payments")
    ]
    assert {a["metric_name"] for a in app_alarms} == {
        "gateway_not_connected",
        "gateway_refused",
        "payment_after_resolution",
    }
    assert all(a["namespace"] == NAMESPACE and not a.get("dimensions") for a in app_alarms)


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_every_existing_alarm_is_still_planned(planned):
    alarms = {a.split("[")[0] for a in planned if a.startswith("module.monitoring.aws_cloudwatch_metric_alarm.")}
    assert {
        f"module.monitoring.aws_cloudwatch_metric_alarm.{name}"
        for name in ("lambda_error_rate", "lambda_throttles", "dlq_not_empty", "api_5xx", "payments", "db")
    } <= alarms


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_the_modules_refuse_a_plain_http_alarm_endpoint_and_a_throttle_without_the_stage_default(tmp_path):
    bad = _waf("waf", True, {"v1/events/POST": THROTTLE["v1/events/POST"]}) + _monitoring(
        alarm_https_endpoints=_hcl(["http://hooks.example.com/alarm"])
    )
    root = _root(tmp_path / "root", bad)
    _terraform(root, tmp_path, ["terraform", "init", "-backend=false", "-input=false", "-no-color"])
    with pytest.raises(AssertionError) as refused:
        _terraform(root, tmp_path, ["terraform", "validate", "-no-color"])
    assert "Each alarm_https_endpoints entry is an https:// URL" in str(refused.value)
    assert 'api_throttle needs the stage default "*/*"' in str(refused.value)
