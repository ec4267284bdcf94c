"""The deployable artefacts: chalice's Terraform, patched, and a slim deployment package."""

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from devtools import event_routing, package

MIRROR = Path(os.environ.get("TF_PROVIDER_MIRROR", "/opt/tf-plugins"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("package") / "dev"
    result = package.package("dev", out)
    return out, result, json.loads((out / "chalice.tf.json").read_text())


def test_terraform_is_patched_for_current_terraform_and_aws_provider_5(built):
    _out, _result, tf = built
    assert tf["terraform"]["required_version"] == ">= 1.5.0"
    assert tf["terraform"]["required_providers"] == {"aws": {"source": "hashicorp/aws", "version": ">= 5.0, < 6.0"}}
    assert "null_data_source" not in tf.get("data", {})


def test_every_sqs_mapping_reports_batch_item_failures_and_every_function_knows_it(built):
    _out, _result, tf = built
    mappings = tf["resource"]["aws_lambda_event_source_mapping"]
    sqs = [m for m in mappings.values() if ":sqs:" in m["event_source_arn"]]
    assert len(sqs) == len(event_routing.consumed_queues()) == 6
    assert all(m["function_response_types"] == ["ReportBatchItemFailures"] for m in sqs)
    rebill = next(m for m in sqs if m["event_source_arn"].endswith(":billing-dev-rebill"))
    assert (rebill["batch_size"], rebill["maximum_batching_window_in_seconds"]) == (100, 5)
    assert all(m["scaling_config"] == {"maximum_concurrency": "${var.sqs_max_concurrency}"} for m in sqs)
    for function in tf["resource"]["aws_lambda_function"].values():
        assert function["environment"]["variables"]["SQS_REPORT_BATCH_ITEM_FAILURES"] == "true"
        assert function["tracing_config"] == {"mode": "Active"}


def test_every_queue_the_handlers_name_is_in_the_generated_mappings(built):
    from app import app

    _out, _result, tf = built
    arns = {m["event_source_arn"] for m in tf["resource"]["aws_lambda_event_source_mapping"].values()}
    for source in app.event_sources:
        if getattr(source, "queue", None):
            # Packaged for dev with RESOURCE_PREFIX=billing-dev; this process has the default "billing".
            staged = source.queue.replace("billing-", "billing-dev-", 1)
            assert any(arn.endswith(f":{staged}") for arn in arns), staged
    rules = [r["name"] for r in tf["resource"]["aws_cloudwatch_event_rule"].values()]
    assert all(name.startswith("billing-dev-") for name in rules)
    assert json.loads((_out / "prefix.auto.tfvars.json").read_text()) == {"prefix": "billing-dev", "stage": "dev"}


def test_the_package_ships_no_runtime_provided_libraries_and_stays_small(built):
    out, result, _tf = built
    with zipfile.ZipFile(out / "deployment.zip") as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert not tops & {"boto3", "botocore", "s3transfer", "dateutil", "urllib3"}
    assert {"app.py", "chalicelib", "pg8000", "chalice"} <= tops
    assert "__pycache__" in tops  # bytecode for the runtime's Python ships with the code
    # fpdf2 (invoice PDFs) brings Pillow and fontTools (~11 MB), the Stripe SDK ~7 MB with its bytecode:
    # 20.2 MB of the 24 allowed here (Lambda takes 50 MB zipped, 250 MB unzipped).
    assert result["zip_bytes"] <= 24 * 1024 * 1024


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_generated_terraform_inits_offline_and_validates(built, tmp_path):
    out, _result, _tf = built
    _terraform_validate(out, tmp_path)
    # The routing main.tf reads from event_routing.json, as the built root module sees it (no AWS calls).
    console = _terraform(
        out,
        tmp_path,
        ["terraform", "console", "-var", "stage=dev", "-var", "ses_sender=x"],
        stdin="jsonencode({topic = local.topic_queues, other = local.other_queues, all = local.queue_names})\n",
    )
    routing = json.loads(json.loads(console.strip()))
    expected = json.loads(event_routing.render())
    assert routing["topic"] == {f"billing-dev-{q}": types for q, types in expected["topic_queues"].items()}
    assert routing["other"] == [f"billing-dev-{q}" for q in expected["other_queues"]]
    assert sorted(routing["all"]) == sorted(f"billing-dev-{q}" for q in event_routing.consumed_queues())


def _terraform_validate(directory: Path, scratch: Path) -> None:
    _terraform(directory, scratch, ["terraform", "init", "-backend=false", "-input=false", "-no-color"])
    _terraform(directory, scratch, ["terraform", "validate", "-no-color"])


def _terraform(directory: Path, scratch: Path, command: list[str], stdin: str | None = None) -> str:
    config = scratch / "terraformrc"
    providers = '["registry.terraform.io/*/*"]'
    config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{MIRROR}"\n    include = {providers}\n  }}\n'
        f"  direct {{\n    exclude = {providers}\n  }}\n"
        "}\n"
    )
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    result = subprocess.run(command, cwd=directory, env=env, input=stdin, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# Read by the app but fine to leave unset when deployed, and why.
DEFAULTS_OK = {
    "DATABASE_URL": "local and tests only; deployed, DB_SECRET_ARN and DB_HOST are used",
    "DB_PORT": "5432 is Aurora's port",
    "DB_NAME": "set per stage in .chalice/config.json",
    "DB_APP_ROLE": "set in .chalice/config.json",
    "DB_STATEMENT_TIMEOUT_MS": "set in .chalice/config.json",
    "DB_CONNECT_TIMEOUT_S": "default 5 s",
    "AWS_REGION": "set by Lambda",
    "AWS_DEFAULT_REGION": "set by Lambda",
    "STAGE": "set per stage in .chalice/config.json",
    "VERIFY_JWT": "set per stage in .chalice/config.json",
    "COGNITO_JWKS_URL": "defaults to the pool's well-known JWKS",
    "JWT_LEEWAY_S": "default 30 s",
    "MAX_BODY_BYTES": "default 256 KB",
    "USAGE_MAX_AGE_DAYS": "default 35",
    "USAGE_MAX_FUTURE_S": "default 300",
    "DUNNING_RETRY_DAYS": "default 1,3,7",
    "PAYMENT_GATEWAY": "mock outside production for tenants without a connected gateway (Stripe is per tenant)",
    "STRIPE_API_BASE": "local stand-in only; deployed, the SDK talks to Stripe",
    "STRIPE_TIMEOUT_S": "default 10 s, well under the claim lease",
    "GATEWAY_CREDENTIALS_TTL_S": "default 300 s",
    "MOCK_PAYMENT_OUTCOME": "mock gateway only",
    "MOCK_PAYMENT_DECLINE_PERCENT": "mock gateway only",
    "REBILL_CATCH_UP_PERIODS": "default 12",
    "WEBHOOK_TIMEOUT_S": "default 10 s: a lane's 15 s budget plus one request fits the 30 s function timeout",
    "WEBHOOK_TIME_SCALE": "tests only (compresses the retry schedule); default 1, always 1 in prod",
    "PAYMENT_CLAIM_LEASE_S": "default 60 s, longer than every function's timeout (lambda_timeout 30 s)",
    "REBILL_SCHEDULE": "read at packaging time into the schedule rule",
    "LOG_LEVEL": "set in .chalice/config.json",
    "LOG_FORMAT": "Lambda always logs JSON",
    "AWS_LAMBDA_FUNCTION_NAME": "set by Lambda",
    "AWS_CHALICE_CLI_MODE": "set by the chalice CLI",
    "_X_AMZN_TRACE_ID": "set by Lambda",
}


def _env_names_read_by_the_app() -> set[str]:
    import re

    root = Path(__file__).resolve().parents[2]
    names = set()
    for path in [root / "app.py", *sorted((root / "chalicelib").rglob("*.py"))]:
        text = path.read_text()
        names |= set(re.findall(r'env\("([A-Z0-9_]+)"', text))
        names |= set(re.findall(r'environ(?:\.get)?\(\s*"([A-Z0-9_]+)"', text))
        names |= set(re.findall(r'"([A-Z0-9_]+)" in os\.environ', text))
    return names


def test_every_env_var_the_app_reads_is_set_by_the_terraform_or_has_a_stated_default(built):
    _out, _result, tf = built
    read = _env_names_read_by_the_app()
    assert {"DB_SECRET_ARN", "EVENTS_TOPIC_ARN", "COGNITO_USER_POOL_ID"} <= read  # the scan works
    for name, function in tf["resource"]["aws_lambda_function"].items():
        variables = function["environment"]["variables"]
        missing = sorted(n for n in read if n not in variables and n not in DEFAULTS_OK)
        assert missing == [], f"{name} lacks {missing}"


def test_functions_may_keep_tenants_gateway_secrets_under_the_stage_prefix_only(built):
    out, _result, tf = built
    integration = (out / "chalice_integration.tf").read_text()
    statement = integration[integration.index('sid       = "GatewaySecrets"') :].split("statement {")[0]
    assert "secretsmanager:CreateSecret" in statement and "secretsmanager:PutSecretValue" in statement
    assert 'secret:${var.prefix}/tenants/*"' in statement
    for function in tf["resource"]["aws_lambda_function"].values():
        variables = function["environment"]["variables"]
        assert variables["GATEWAY_CREDENTIALS_STORE"] == "secretsmanager"
        assert variables["GATEWAY_SECRETS_KMS_KEY_ID"] == "${module.database.kms_key_arn}"


def test_stripes_webhook_route_has_no_cognito_authorizer_and_every_other_route_has(built):
    _out, _result, tf = built
    swagger = json.loads(tf["locals"]["chalice_api_swagger"])
    for path, methods in swagger["paths"].items():
        for method, operation in methods.items():
            if method == "options":
                continue
            public = path.startswith(("/v1/gateway/stripe/", "/v1/hosted_invoices/")) or path == "/v1/health"
            assert ("security" in operation) is not public, (method, path)


def test_every_queue_the_app_consumes_is_created_by_the_infra_from_the_routing_beside_it(built):
    out, _result, _tf = built
    # main.tf reads the queues from event_routing.json: the copy in the build is the checked-in, current one.
    assert 'jsondecode(file("${path.module}/event_routing.json"))' in (out / "main.tf").read_text()
    routing = json.loads((out / "event_routing.json").read_text())
    assert (out / "event_routing.json").read_text() == event_routing.render()
    assert sorted([*routing["topic_queues"], *routing["other_queues"]]) == sorted(event_routing.consumed_queues())
    assert {"webhooks", "webhook-deliveries"} <= {*routing["topic_queues"], *routing["other_queues"]}
    assert routing["topic_queues"]["webhooks"] is None  # every type: no filter policy


def test_topic_subscriptions_filter_on_the_event_type_attribute_and_the_runtime_may_send_to_every_queue(built):
    import re

    out, _result, tf = built
    messaging = re.sub(r"\s+", " ", (out / "modules" / "messaging" / "main.tf").read_text())  # whatever fmt aligns
    subscription = messaging[messaging.index('resource "aws_sns_topic_subscription" "queue"') :].split(" } ")[0]
    assert "for_each = var.topic_queues" in subscription
    assert "filter_policy = each.value == null ? null : jsonencode({ eventType = each.value })" in subscription
    assert 'filter_policy_scope = each.value == null ? null : "MessageAttributes"' in subscription
    assert messaging.count("for_each = toset(local.queues)") == 2  # queue and DLQ, topic and other queues alike
    assert "visibility_timeout_seconds = 6 * var.function_timeout_s" in messaging
    integration = re.sub(r"\s+", " ", (out / "chalice_integration.tf").read_text())
    queues = integration[integration.index('sid = "Queues"') :].split("statement {")[0]
    assert '"sqs:SendMessage", "sqs:GetQueueUrl"' in queues
    assert "resources = values(module.messaging.queue_arns)" in queues
    assert "queue_names = local.queue_names" in integration  # queue widgets; DLQ alarms from dlq_names
    # chalice's own packaging maps both new queues to their functions.
    mappings = {
        m["event_source_arn"].rsplit(":", 1)[1]: m["function_name"]
        for m in tf["resource"]["aws_lambda_event_source_mapping"].values()
    }
    assert "webhook_fan_out" in mappings["billing-dev-webhooks"]
    assert "webhook_delivery" in mappings["billing-dev-webhook-deliveries"]


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
def test_infra_terraform_is_formatted():
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "infra"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


CHECKOV = Path(__file__).resolve().parents[2] / ".venv-checkov" / "bin" / "checkov"


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is not installed (scripts/bootstrap installs it)")
def test_checkov_finds_nothing_and_every_skip_says_why(built):
    out, _result, _tf = built
    result = subprocess.run(
        [str(CHECKOV), "-d", str(out), "--framework", "terraform", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100
    for skipped in report["results"]["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, (skipped["check_id"], skipped["resource"], reason)


def test_stage_config_puts_every_infra_output_the_app_needs_into_chalice_config(tmp_path):
    from devtools import stage_config

    config = tmp_path / "config.json"
    shutil.copy(stage_config.CONFIG, config)
    outputs = {name: {"value": f"value-of-{name}"} for name in stage_config.ENV_FROM_OUTPUTS.values()}
    outputs["lambda_subnet_ids"] = {"value": ["subnet-a", "subnet-b"]}
    outputs["lambda_security_group_id"] = {"value": "sg-1"}
    outputs["kms_key_arns"] = {"value": ["arn:key-1", "arn:key-2"]}
    outputs["queue_arns"] = {"value": ["arn:q-1"]}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))

    stage_config.main(["--stage", "prod", "--outputs", str(tmp_path / "outputs.json"), "--config", str(config)])

    prod = json.loads(config.read_text())["stages"]["prod"]
    assert prod["environment_variables"]["DB_SECRET_ARN"] == "value-of-db_secret_arn"
    assert prod["environment_variables"]["SQS_REPORT_BATCH_ITEM_FAILURES"] == "false"
    assert (prod["subnet_ids"], prod["security_group_ids"], prod["xray"]) == (["subnet-a", "subnet-b"], ["sg-1"], True)
    read = _env_names_read_by_the_app()
    assert all(n in prod["environment_variables"] or n in DEFAULTS_OK for n in read)
    assert (prod["autogen_policy"], prod["iam_policy_file"]) == (False, "policy-prod.json")
    policy = json.loads((tmp_path / "policy-prod.json").read_text())
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert {
        "secretsmanager:GetSecretValue",
        "sns:Publish",
        "sqs:SendMessage",
        "ses:SendEmail",
        "kms:Decrypt",
    } <= actions


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_infra_alone_validates_for_the_chalice_deploy_path(tmp_path):
    infra = Path(__file__).resolve().parents[2] / "infra"
    target = tmp_path / "infra"
    shutil.copytree(infra, target, ignore=shutil.ignore_patterns("with-chalice", ".terraform*"))
    _terraform_validate(target, tmp_path)
