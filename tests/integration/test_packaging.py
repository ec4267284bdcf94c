"""The deployable artefacts: chalice's Terraform, patched, and a slim deployment package."""

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from devtools import event_routing, package, stack_apply

MIRROR = Path(os.environ.get("TF_PROVIDER_MIRROR", "/opt/tf-plugins"))


@pytest.fixture(scope="module")
def ca_bundle(tmp_path_factory):
    """A CA of the test's own standing in for the RDS CA bundle (which is downloaded, not in the repository)."""
    from devtools.certs import Authority

    return Authority.make("stand-in RDS CA").write(tmp_path_factory.mktemp("ca") / "bundle.pem")


@pytest.fixture(scope="module")
def built(tmp_path_factory, ca_bundle):
    out = tmp_path_factory.mktemp("package") / "dev"
    result = package.package("dev", out, rds_ca_bundle=ca_bundle)
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
    for mapping in sqs:  # each polls with at most its function's reservation
        function = mapping["function_name"].split(".")[1]
        assert mapping["scaling_config"] == {"maximum_concurrency": f'${{local.sqs_max_concurrency["{function}"]}}'}
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
    assert json.loads((_out / "prefix.auto.tfvars.json").read_text()) == {
        "prefix": "billing-dev",
        "stage": "dev",
        "pre_token_generation_trigger": "packaged",  # app.py has the trigger: the pool calls it
    }


def test_the_package_ships_no_runtime_provided_libraries_and_stays_small(built):
    out, result, _tf = built
    with zipfile.ZipFile(out / "deployment.zip") as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert not tops & {"boto3", "botocore", "s3transfer", "dateutil", "urllib3"}
    assert {"app.py", "chalicelib", "pg8000", "chalice"} <= tops
    assert "__pycache__" in tops  # bytecode for the runtime's Python ships with the code
    with zipfile.ZipFile(out / "deployment.zip") as archive:  # the CA bundle the functions verify Aurora with
        assert archive.read(package.CA_BUNDLE_IN_PACKAGE).startswith(b"-----BEGIN CERTIFICATE-----")
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


def _terraform(
    directory: Path, scratch: Path, command: list[str], stdin: str | None = None, env_extra: dict | None = None
) -> str:
    config = stack_apply.terraformrc(scratch / "terraformrc", MIRROR)
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    env.update(env_extra or {})
    result = subprocess.run(command, cwd=directory, env=env, input=stdin, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# Read by the app but fine to leave unset when deployed, and why.
DEFAULTS_OK = {
    "DATABASE_URL": "local and tests only; deployed, DB_IAM_AUTH, DB_USER and DB_HOST are used",
    "DB_SECRET_ARN": "the owner's secret: migrations only, never a function (they log in as the runtime role)",
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
    "PAYMENT_CONCURRENCY": "default 8 charges in flight per invocation (Stripe's 100 writes/s: docs/scaling.md)",
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
    # The database login's IAM token is signed from them (chalicelib/aws.py), as botocore would read them.
    "AWS_ACCESS_KEY_ID": "set by Lambda (the function role's credentials)",
    "AWS_SECRET_ACCESS_KEY": "set by Lambda (the function role's credentials)",
    "AWS_SESSION_TOKEN": "set by Lambda (the function role's credentials)",
    "AWS_SECURITY_TOKEN": "botocore's older name for AWS_SESSION_TOKEN, read first as botocore does; unset in Lambda",
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
        names |= set(re.findall(r'_flag\(\s*"([A-Z0-9_]+)"', text))
    return names


def test_every_env_var_the_app_reads_is_set_by_the_terraform_or_has_a_stated_default(built):
    _out, _result, tf = built
    read = _env_names_read_by_the_app()
    assert {"DB_SECRET_ARN", "DB_IAM_AUTH", "EVENTS_TOPIC_ARN", "COGNITO_USER_POOL_ID"} <= read  # the scan works
    for name, function in tf["resource"]["aws_lambda_function"].items():
        variables = function["environment"]["variables"]
        missing = sorted(n for n in read if n not in variables and n not in DEFAULTS_OK)
        assert missing == [], f"{name} lacks {missing}"


def test_functions_log_in_to_aurora_as_the_runtime_role_verifying_tls_and_never_see_the_owners_secret(built):
    _out, _result, tf = built
    for function in tf["resource"]["aws_lambda_function"].values():
        variables = function["environment"]["variables"]
        assert "DB_SECRET_ARN" not in variables
        assert (variables["DB_IAM_AUTH"], variables["DB_USER"]) == ("true", "${local.db_runtime_user}")
        assert variables["DB_SSL_ROOT_CERT"] == package.CA_BUNDLE_IN_PACKAGE
        assert variables["GATEWAY_CREDENTIALS_STORE"] == "secretsmanager"
        assert variables["GATEWAY_SECRETS_KMS_KEY_ID"] == "${module.database.kms_key_arn}"


def test_packaging_refuses_without_a_usable_rds_ca_bundle(tmp_path):
    (tmp_path / "empty.pem").write_text("")
    for missing in (tmp_path / "nowhere.pem", tmp_path / "empty.pem"):
        with pytest.raises(SystemExit, match="truststore.pki.rds.amazonaws.com"):
            package.package("dev", tmp_path / "out", rds_ca_bundle=missing)
    assert not (tmp_path / "out").exists()  # refused before chalice packaged anything


def test_every_function_has_its_own_role_log_group_dead_letter_queue_and_reservation(built):
    _out, _result, tf = built
    functions = tf["resource"]["aws_lambda_function"]
    access = json.loads((Path(__file__).resolve().parents[2] / "infra" / "function_access.json").read_text())
    assert set(access["functions"]) == set(functions) == set(access["why"])  # one row, and a reason, each
    assert "aws_iam_role" not in tf["resource"] and "aws_iam_role_policy" not in tf["resource"]  # chalice's shared one
    for name, function in functions.items():
        assert function["function_name"] == f"billing-dev-{name}"
        assert function["role"] == f'${{aws_iam_role.function["{name}"].arn}}'
        assert function["dead_letter_config"] == {"target_arn": "${module.messaging.failed_invocations_queue_arn}"}
        assert function["reserved_concurrent_executions"] == f'${{lookup(local.reserved_concurrency, "{name}", -1)}}'
        assert f'aws_cloudwatch_log_group.function["{name}"]' in function["depends_on"]
    assert tf["resource"]["aws_api_gateway_rest_api"]["rest_api"]["name"] == "billing-dev"


def test_stripes_webhook_route_has_no_cognito_authorizer_and_every_other_route_has(built):
    _out, _result, tf = built
    swagger = json.loads(tf["locals"]["chalice_api_swagger"])
    for path, methods in swagger["paths"].items():
        for method, operation in methods.items():
            if method == "options":
                continue
            public = path.startswith(("/v1/gateway/stripe/", "/v1/hosted_invoices/")) or path == "/v1/health"
            assert ("security" in operation) is not public, (method, path)


def test_every_path_answers_browsers_preflights_through_the_app_without_an_authorizer(built):
    from app import app

    _out, _result, tf = built
    swagger = json.loads(tf["locals"]["chalice_api_swagger"])
    assert set(swagger["paths"]) == set(app.routes)
    for path, methods in swagger["paths"].items():
        options = methods["options"]
        assert "security" not in options, path  # a preflight never carries the token
        # The app answers (chalicelib/cors.py), not a mock integration with one static origin.
        assert options["x-amazon-apigateway-integration"]["type"] == "aws_proxy", path


def test_api_gateways_own_error_answers_carry_the_stages_first_origin_and_every_function_its_origins(built):
    _out, _result, tf = built
    swagger = json.loads(tf["locals"]["chalice_api_swagger"])
    origins = package.stage_cors_origins("dev")
    assert origins[0] == "https://app.dev.example.com"
    responses = swagger["x-amazon-apigateway-gateway-responses"]
    assert set(responses) == {"DEFAULT_4XX", "DEFAULT_5XX"}
    for response in responses.values():
        assert response["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == f"'{origins[0]}'"
    # In the API's definition: a change redeploys the stage (the deployment's trigger is the definition's md5).
    assert tf["resource"]["aws_api_gateway_deployment"]["rest_api"]["triggers"] == {
        "redeployment": "${md5(local.chalice_api_swagger)}"
    }
    for function in tf["resource"]["aws_lambda_function"].values():
        assert function["environment"]["variables"]["CORS_ALLOWED_ORIGINS"] == ",".join(origins)


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
    assert "queue_names = local.queue_names" in integration  # queue widgets; DLQ alarms from dlq_names
    # Who sends to which queue: the table every role is granted from. The API kicks a lane when a tenant
    # retries a delivery (POST /v1/webhook_endpoints/{id}/deliveries/{id}/retry), which review found missing.
    access = json.loads((out / "function_access.json").read_text())
    senders = {f for f, needs in access["functions"].items() if {"kick_webhook_lanes", "enqueue_rebill"} & set(needs)}
    # The rebill processor runs the daily run's selection steps: each sends accounts and the next step.
    senders_expected = {"api_handler", "webhook_fan_out", "webhook_delivery", "outbox_sweep", "rebill_schedule"}
    assert senders == senders_expected | {"rebill_processor"}
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


# Skipped for the whole plan, each with why. checkov reads the in-code skips (#checkov:skip=ID:why) of
# the .tf files through --repo-root-for-plan-enrichment, but none from chalice's JSON.
PLAN_SKIPS = {
    "CKV_AWS_272": "code signing needs the package signed by AWS Signer in S3 before deploy; chalice package"
    " builds a local zip that Terraform uploads, so a signing config would check nothing (a pipeline change)",
}
# Types in chalice.tf.json no check of this checkov evaluates in a plan (so they get no result), and why
# that is fine; a new type in chalice's output fails the test until it is looked at.
NO_PLAN_CHECKS = {
    "aws_api_gateway_deployment": "its one check (create_before_destroy) reads lifecycle, which a plan does not carry",
    "aws_api_gateway_rest_api": "likewise; the stage (scanned) carries logging, tracing, WAF and caching",
    "aws_cloudwatch_event_rule": "a schedule: no security setting",
    "aws_cloudwatch_event_target": "a schedule's target: no security setting",
    "aws_lambda_event_source_mapping": "a queue-to-function mapping: no security setting",
    "aws_sns_topic_subscription": "a topic-to-function subscription: no security setting",
}


@pytest.fixture(scope="module")
def dev_plan(built, local_aws, tmp_path_factory):
    """The dev stage's plan against local AWS: (its working directory, `terraform show -json`)."""
    out, _result, _tf = built
    scratch = tmp_path_factory.mktemp("dev-plan")
    plan = _plan(out, scratch, local_aws)
    (scratch / "plan" / "plan.json").write_text(json.dumps(plan))
    return scratch / "plan", plan


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is not installed (scripts/bootstrap installs it)")
@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_checkov_over_the_plan_scans_every_resource_finds_nothing_and_every_skip_says_why(built, dev_plan):
    _out, _result, tf = built
    directory, plan = dev_plan
    command = [str(CHECKOV), "-f", str(directory / "plan.json"), "--framework", "terraform_plan", "--skip-download"]
    command += ["--repo-root-for-plan-enrichment", str(directory), "--skip-check", ",".join(PLAN_SKIPS)]
    result = subprocess.run([*command, "--compact", "-o", "json"], capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 400 and report["summary"]["parsing_errors"] == 0
    for skipped in report["results"]["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, (skipped["check_id"], skipped["resource"], reason)
    assert all(len(reason) > 20 for reason in PLAN_SKIPS.values())
    # Every resource the plan makes was offered to the checks, chalice's among them...
    managed = [c for c in plan["resource_changes"] if c["mode"] == "managed"]
    assert report["summary"]["resource_count"] == len(managed)
    assert {f"{kind}.{name}" for kind, named in tf["resource"].items() for name in named} <= {
        c["address"] for c in managed
    }
    # ...and every type of chalice's got a result, or is named above with why none applies.
    results = [r for kind in ("passed_checks", "failed_checks", "skipped_checks") for r in report["results"][kind]]
    checked = {_resource_type(r["resource"]) for r in results}
    assert set(tf["resource"]) - checked == set(NO_PLAN_CHECKS), "a type of chalice.tf.json is not scanned"
    assert {"aws_lambda_function", "aws_iam_role", "aws_iam_role_policy", "aws_cloudwatch_log_group"} <= checked


def _resource_type(address: str) -> str:
    """aws_lambda_function from module.a.module.b.aws_lambda_function.name["key"]."""
    parts = address.split(".")
    while parts[0] == "module":
        parts = parts[2:]
    return parts[0]


def _stage_outputs(prefix: str = "billing-prod") -> dict:
    """infra/'s outputs as `terraform output -json` gives them, with made-up values."""
    from devtools import stage_config

    outputs = {name: {"value": f"value-of-{name}"} for name in stage_config.ENV_FROM_OUTPUTS.values()}
    outputs["resource_prefix"] = {"value": prefix}
    outputs["lambda_subnet_ids"] = {"value": ["subnet-a", "subnet-b"]}
    outputs["lambda_security_group_id"] = {"value": "sg-1"}
    queues = [f"{prefix}-{q}" for q in event_routing.consumed_queues()]
    outputs["queue_arns"] = {"value": [f"arn:aws:sqs:us-east-1:1:{q}" for q in queues]}
    names = ("database_login", "events_topic", "messaging_key", "gateway_secrets", "secrets_key", "email_identities")
    names += ("user_pool", "webhook_deliveries_queue", "rebill_queue")
    outputs["function_resource_arns"] = {"value": {name: f"arn:{name}" for name in names}}
    access = json.loads((Path(__file__).resolve().parents[2] / "infra" / "function_access.json").read_text())
    outputs["reserved_concurrency"] = {"value": {function: 5 for function in access["functions"]}}
    return outputs


def test_stage_config_gives_each_function_its_rows_grants_its_reservation_and_the_runtime_login(
    tmp_path, ca_bundle, monkeypatch
):
    from devtools import stage_config

    monkeypatch.setattr(package, "DEFAULT_CA_BUNDLE", ca_bundle)  # where chalice deploy would ship it from
    config = tmp_path / "config.json"
    shutil.copy(stage_config.CONFIG, config)
    (tmp_path / "outputs.json").write_text(json.dumps(_stage_outputs()))

    stage_config.main(["--stage", "prod", "--outputs", str(tmp_path / "outputs.json"), "--config", str(config)])

    prod = json.loads(config.read_text())["stages"]["prod"]
    env = prod["environment_variables"]
    assert (env["DB_IAM_AUTH"], env["DB_USER"], env["DB_HOST"]) == (
        "true",
        "value-of-db_runtime_user",
        "value-of-db_host",
    )
    assert env["DB_SSL_ROOT_CERT"] == package.CA_BUNDLE_IN_PACKAGE and "DB_SECRET_ARN" not in env
    assert env["SQS_REPORT_BATCH_ITEM_FAILURES"] == "false"
    assert (prod["subnet_ids"], prod["security_group_ids"], prod["xray"]) == (["subnet-a", "subnet-b"], ["sg-1"], True)
    read = _env_names_read_by_the_app()
    assert all(n in env or n in DEFAULTS_OK for n in read)
    access = json.loads(stage_config.ACCESS.read_text())
    for function, needs in access["functions"].items():
        settings = prod["lambda_functions"][function]
        assert settings["reserved_concurrency"] == 5
        statements = json.loads((tmp_path / settings["iam_policy_file"]).read_text())["Statement"]
        granted = {a for statement in statements for a in statement["Action"]}
        expected = {a for need in needs for grant in access["grants"][need] for a in grant["actions"]}
        assert expected <= granted
        extra = granted - expected - TRIGGER_BASE_ACTIONS - {"logs:CreateLogGroup"}
        own_queue = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
        if function in stage_config.consumed_queues():  # its queue, and the key its messages are encrypted with
            assert own_queue <= extra <= own_queue | {"kms:Decrypt"} and "kms:Decrypt" in granted, function
        else:
            assert extra == set(), function
        logs = statements[0]["Resource"]
        name = "billing-platform-prod" if function == "api_handler" else f"billing-platform-prod-{function}"
        assert logs[0].endswith(f":log-group:/aws/lambda/{name}")  # as chalice deploy names the function
    rebill = json.loads((tmp_path / "policy-prod-rebill_processor.json").read_text())["Statement"]
    assert any(s["Resource"] == "arn:aws:sqs:us-east-1:1:billing-prod-rebill" for s in rebill)


def test_stage_config_refuses_an_sqs_consumer_reserved_below_its_five_pollers(tmp_path, ca_bundle, monkeypatch):
    from devtools import stage_config

    monkeypatch.setattr(package, "DEFAULT_CA_BUNDLE", ca_bundle)
    outputs = _stage_outputs()
    outputs["reserved_concurrency"]["value"]["rebill_processor"] = 4
    with pytest.raises(SystemExit, match="rebill_processor"):
        stage_config.apply(json.loads(stage_config.CONFIG.read_text()), "prod", outputs, policy_dir=tmp_path)


def test_stage_config_refuses_when_the_rds_ca_bundle_is_not_where_chalice_deploy_ships_it(tmp_path, monkeypatch):
    from devtools import stage_config

    monkeypatch.setattr(package, "DEFAULT_CA_BUNDLE", tmp_path / "missing.pem")
    with pytest.raises(SystemExit, match="curl"):
        stage_config.apply(json.loads(stage_config.CONFIG.read_text()), "prod", _stage_outputs(), policy_dir=tmp_path)


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_infra_alone_validates_for_the_chalice_deploy_path(tmp_path):
    infra = Path(__file__).resolve().parents[2] / "infra"
    target = tmp_path / "infra"
    shutil.copytree(infra, target, ignore=shutil.ignore_patterns("with-chalice", ".terraform*"))
    _terraform_validate(target, tmp_path)


# --- identity: the resource server's scopes, the pre-token-generation trigger, who manages the pool -------------

TENANT_ADMIN_ACTIONS = {"cognito-idp:AdminCreateUser", "cognito-idp:AdminGetUser", "cognito-idp:AdminAddUserToGroup"}
MACHINE_CLIENT_ACTIONS = {
    "cognito-idp:CreateUserPoolClient",
    "cognito-idp:DeleteUserPoolClient",
}
# Logs, the network interfaces of a function in the VPC, X-Ray (stage_config's BASE_STATEMENTS).
TRIGGER_BASE_ACTIONS = {
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
PUBLIC_ROUTES = ("/v1/gateway/stripe/", "/v1/hosted_invoices/", "/v1/health")


def _resource_server_scopes() -> tuple[str, set[str]]:
    """The cognito module's resource server as written: (default identifier, scope names)."""
    import re

    infra = Path(__file__).resolve().parents[2] / "infra"
    module, root = (infra / "modules" / "cognito" / "main.tf").read_text(), (infra / "variables.tf").read_text()
    defaults = [
        re.search(r'default\s*=\s*"([^"]+)"', text[text.index(f'variable "{name}"') :].split("\n}")[0]).group(1)
        for text, name in ((module, "resource_server_identifier"), (root, "cognito_resource_server"))
    ]
    assert len(set(defaults)) == 1, defaults
    identifier = defaults[0]
    server = module[module.index('resource "aws_cognito_resource_server"') :].split("\n}")[0]
    return identifier, set(re.findall(r'scope_name\s*=\s*"([^"]+)"', server))


def test_every_authenticated_method_demands_scopes_of_the_resource_server_and_the_app_agrees(built):
    """API Gateway's Cognito authorizer with OAuth scopes: it then takes access tokens only, with one of them."""
    from chalicelib import auth

    _out, _result, tf = built
    identifier, names = _resource_server_scopes()
    assert {"usage.write", "read", "admin"} <= names
    assert identifier == auth.RESOURCE_SERVER  # what the app checks in tokens is what Cognito issues
    # Packaged with COGNITO_RESOURCE_SERVER set to the module's identifier: either spelling is that identifier.
    prefixes = (identifier, "${module.cognito.resource_server_identifier}")
    defined = {f"{prefix}/{name}" for prefix in prefixes for name in names}
    swagger = json.loads(tf["locals"]["chalice_api_swagger"])
    assert swagger["securityDefinitions"]["cognito"]["x-amazon-apigateway-authorizer"]["type"] == "cognito_user_pools"
    demanded = set()
    for path, methods in swagger["paths"].items():
        for method, operation in methods.items():
            if method == "options" or path.startswith(PUBLIC_ROUTES):
                continue  # preflights and the public routes have no authorizer at all (tests above)
            security = operation.get("security")
            assert security and len(security) == 1 and set(security[0]) == {"cognito"}, (method, path, security)
            scopes = security[0]["cognito"]
            assert scopes, f"{method.upper()} {path} takes ID tokens: its authorizer has no OAuth scopes"
            assert set(scopes) <= defined, (method, path, scopes)
            demanded |= set(scopes)
    assert {f"{identifier}/{name}" for name in ("usage.write", "read", "admin")} <= demanded


def test_the_pre_token_generation_trigger_is_packaged_short_with_its_own_role_and_cognitos_invoke(built):
    import re

    out, _result, tf = built
    functions = tf["resource"]["aws_lambda_function"]
    trigger, api = functions["pre_token_generation"], functions["api_handler"]
    assert trigger["function_name"] == "billing-dev-pre_token_generation"  # infra/main.tf builds its ARN
    assert trigger["timeout"] <= 5  # Cognito waits 5 s for it
    assert trigger["memory_size"] == api["memory_size"]
    assert trigger["vpc_config"] == api["vpc_config"]  # it reads the database like the API
    assert trigger["environment"]["variables"]["DB_HOST"] == "${local.db_host}"
    assert trigger["role"] == '${aws_iam_role.function["pre_token_generation"].arn}'
    assert 'aws_iam_role_policy.function["pre_token_generation"]' in trigger["depends_on"]
    permission = tf["resource"]["aws_lambda_permission"]["pre_token_generation-cognito"]
    assert permission == {
        "statement_id": "cognito-pre-token-generation",
        "function_name": "${aws_lambda_function.pre_token_generation.arn}",
        "action": "lambda:InvokeFunction",
        "principal": "cognito-idp.amazonaws.com",
        "source_arn": "${module.cognito.user_pool_arn}",
    }
    main = re.sub(r"\s+", " ", (out / "main.tf").read_text())
    app_name = json.loads((Path(__file__).resolve().parents[2] / ".chalice" / "config.json").read_text())["app_name"]
    # Packaged: PREFIX-NAME, as devtools/package.py names it; chalice deploy: {app_name}-{stage}-{name}.
    assert '? "${local.prefix}-pre_token_generation"' in main
    assert f': "{app_name}-${{var.stage}}-pre_token_generation")' in main


@pytest.fixture(scope="module")
def local_aws():
    """A moto server on loopback for `terraform plan`: it answers the data sources (STS, EC2 zones); nothing is made."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield stack_apply.aws_env(f"http://127.0.0.1:{port}")
    server.stop()


def _plan(directory: Path, scratch: Path, aws_env: dict, *variables: str) -> dict:
    """`terraform plan` of a copy of the root module against local AWS, as `terraform show -json` gives it."""
    work = scratch / "plan"
    shutil.copytree(directory, work, ignore=shutil.ignore_patterns(".terraform*"))
    _terraform(work, scratch, ["terraform", "init", "-backend=false", "-input=false", "-no-color"])
    args = [a for v in ("ses_sender=billing@example.com", *variables) for a in ("-var", v)]
    command = ["terraform", "plan", "-input=false", "-no-color", "-lock=false", "-out=plan.bin", *args]
    _terraform(work, scratch, command, env_extra=aws_env)
    return json.loads(_terraform(work, scratch, ["terraform", "show", "-json", "plan.bin"], env_extra=aws_env))


def _planned(plan: dict) -> dict:
    return {change["address"]: change["change"]["after"] for change in plan["resource_changes"]}


def _configured(module: dict) -> dict:
    return {resource["address"]: resource for resource in module["resources"]}


def _references(expression: dict | None) -> set[str]:
    return set((expression or {}).get("references", []))


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_the_plan_wires_the_trigger_into_the_pool_without_a_cycle_and_scopes_every_role_to_its_row(dev_plan):
    _directory, plan = dev_plan  # a cycle between the pool and the functions fails the plan here
    planned = _planned(plan)
    # The pool calls the trigger with event V3_0, on the Essentials plan (access tokens, client credentials too).
    pool = planned["module.cognito.aws_cognito_user_pool.this"]
    function_name = planned["aws_lambda_function.pre_token_generation"]["function_name"]
    assert pool["lambda_config"][0]["pre_token_generation_config"] == [
        {"lambda_arn": f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}", "lambda_version": "V3_0"}
    ]
    assert pool["user_pool_tier"] == "ESSENTIALS"
    # Cognito may invoke it, from this pool only; the grant is made after the function (it refers to it).
    permission = planned["aws_lambda_permission.pre_token_generation-cognito"]
    assert (permission["principal"], permission["action"]) == ("cognito-idp.amazonaws.com", "lambda:InvokeFunction")
    root = plan["configuration"]["root_module"]
    cognito = root["module_calls"]["cognito"]["module"]
    grant = _configured(root)["aws_lambda_permission.pre_token_generation-cognito"]["expressions"]
    assert "aws_lambda_function.pre_token_generation.arn" in _references(grant["function_name"])
    assert "module.cognito.user_pool_arn" in _references(grant["source_arn"])
    assert "aws_cognito_user_pool.this.arn" in _references(cognito["outputs"]["user_pool_arn"]["expression"])
    assert not [a for a in planned if a.startswith("module.cognito.aws_lambda_permission.")]  # granted once
    # The resource server and its scopes; the people's app client may ask for all of them.
    server = planned["module.cognito.aws_cognito_resource_server.billing"]
    identifier, names = _resource_server_scopes()
    assert server["identifier"] == identifier == "billing"
    assert {scope["scope_name"] for scope in server["scope"]} == names >= {"usage.write", "read", "admin"}
    client = _configured(cognito)["aws_cognito_user_pool_client.api"]["expressions"]
    assert "aws_cognito_resource_server.billing.scope_identifiers" in _references(client["allowed_oauth_scopes"])
    assert plan["planned_values"]["outputs"]["cognito_resource_server"]["value"] == "billing"
    # Each role: its row of function_access.json, what every role gets, and a consumer's own queue.
    access = json.loads((Path(__file__).resolve().parents[2] / "infra" / "function_access.json").read_text())
    every = {"logs:CreateLogStream", "logs:PutLogEvents", "ec2:DescribeNetworkInterfaces", "ec2:CreateNetworkInterface"}
    every |= {"ec2:DescribeSubnets"}
    every |= {"ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}
    every |= {"sqs:SendMessage", "kms:GenerateDataKey", "kms:Decrypt"}  # the failed-invocations queue
    own_queue = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
    consumers = {
        c["address"].split(".")[1].removesuffix("-sqs-event-source")
        for c in plan["resource_changes"]
        if c["type"] == "aws_lambda_event_source_mapping"
    }
    assert "rebill_processor" in consumers
    for function, needs in access["functions"].items():
        statements = planned[f'data.aws_iam_policy_document.function["{function}"]']["statement"]
        granted = {a for statement in statements for a in statement["actions"]}
        expected = {a for need in needs for grant in access["grants"][need] for a in grant["actions"]}
        assert granted == every | expected | (own_queue if function in consumers else set()), function
        assert not any("*" in a for a in granted), function
        star = [st["actions"] for st in statements if "*" in st["resources"]]
        assert star == [["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]], function  # none to name
        assert planned[f'aws_iam_role.function["{function}"]']["name"] == f"billing-dev-{function.replace('_', '-')}"
    cognito_of = {
        function: {a for need in needs for grant in access["grants"][need] for a in grant["actions"] if "cognito" in a}
        for function, needs in access["functions"].items()
    }
    assert {function: actions for function, actions in cognito_of.items() if actions} == {
        "api_handler": TENANT_ADMIN_ACTIONS | MACHINE_CLIENT_ACTIONS,
        "send_notification": TENANT_ADMIN_ACTIONS,
        "bootstrap_operator": TENANT_ADMIN_ACTIONS,
    }
    assert access["functions"]["pre_token_generation"] == ["database"]
    keys = {a.split('"')[1] for a in planned if a.startswith("aws_iam_role_policy_attachment.xray[")}
    assert keys == set(access["functions"])
    # The database: IAM authentication as the runtime role at the cluster, no owner's secret anywhere.
    login = next(g for g in access["grants"]["database"])
    assert login == {"actions": ["rds-db:connect"], "resources": ["database_login"]}


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_chalice_deploy_path_attaches_the_trigger_with_one_variable_once_the_function_exists(local_aws, tmp_path):
    infra = Path(__file__).resolve().parents[2] / "infra"
    target = tmp_path / "infra"
    shutil.copytree(infra, target, ignore=shutil.ignore_patterns("with-chalice", ".terraform*"))
    before = _planned(
        _plan(target, tmp_path / "before", local_aws, "stage=prod", "db_max_acu=16")
    )  # prod.tfvars.example
    assert before["module.cognito.aws_cognito_user_pool.this"]["lambda_config"] == []  # no function yet
    assert not [a for a in before if "aws_lambda_permission" in a]
    after = _planned(
        _plan(
            target,
            tmp_path / "after",
            local_aws,
            "stage=prod",
            "db_max_acu=16",
            "pre_token_generation_trigger=deployed",
        )
    )
    arn = "arn:aws:lambda:us-east-1:123456789012:function:billing-platform-prod-pre_token_generation"
    assert after["module.cognito.aws_cognito_user_pool.this"]["lambda_config"][0]["pre_token_generation_config"] == [
        {"lambda_arn": arn, "lambda_version": "V3_0"}
    ]
    permission = after["module.cognito.aws_lambda_permission.pre_token_generation[0]"]
    assert (permission["function_name"], permission["principal"]) == (arn, "cognito-idp.amazonaws.com")


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_a_plan_whose_reservations_need_more_connections_than_the_database_allows_fails(local_aws, tmp_path):
    import subprocess as run

    infra = Path(__file__).resolve().parents[2] / "infra"
    target = tmp_path / "infra"
    shutil.copytree(infra, target, ignore=shutil.ignore_patterns("with-chalice", "account", ".terraform*"))
    _terraform(target, tmp_path, ["terraform", "init", "-backend=false", "-input=false", "-no-color"])

    def plan(*variables: str) -> run.CompletedProcess:
        dev = ("ses_sender=billing@example.com", "stage=dev", "db_max_acu=2")  # as infra/env/dev.tfvars
        args = [a for v in (*dev, *variables) for a in ("-var", v)]
        command = ["terraform", "plan", "-input=false", "-no-color", "-lock=false", "-refresh=false"]
        command += ["-target=terraform_data.connection_budget", *args]
        env = {**os.environ, "TF_CLI_CONFIG_FILE": str(tmp_path / "terraformrc"), **local_aws}
        return run.run(command, cwd=target, env=env, capture_output=True, text=True, timeout=300)

    assert plan().returncode == 0  # dev's defaults: 129 connections of 282
    # 40 delivery containers of 11 connections each are 440 on their own: over dev's 282.
    refused = plan('reserved_concurrency={"webhook_delivery": 40}')
    assert refused.returncode != 0
    assert "over the database's budget of 282" in " ".join(refused.stderr.split())
    assert plan('reserved_concurrency={"webhook_delivery": 40}', "db_max_acu=4").returncode == 0  # 756 x 0.8 - 20
