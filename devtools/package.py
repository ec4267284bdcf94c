"""`chalice package --pkg-format terraform`, made deployable with Terraform 1.5+ and AWS provider 5.

    python -m devtools.package --stage dev [--out build/dev] [--rds-ca-bundle certs/rds-ca-bundle.pem]

What chalice generates pins Terraform < 1.4 and the AWS provider < 5, declares an
unused ``null_data_source`` (and with it the null provider), and cannot express
some settings this app depends on. The post-processing:
- requires Terraform >= 1.5 and hashicorp/aws 5.x, and drops the null provider;
- turns on ``ReportBatchItemFailures`` for every SQS event-source mapping and sets
  ``SQS_REPORT_BATCH_ITEM_FAILURES=true`` on every function, together (the
  handlers only report partial failures where the mapping honours them);
- turns on X-Ray active tracing (``TRACING=true``) for every function;
- names every function and the REST API by the stage's prefix (two stages, or two stacks of one,
  side by side in one account), runs every function under a role of its own with only what it
  calls (chalice's one shared role and its policy are dropped: infra/with-chalice/chalice_integration.tf
  grants per function), gives each a dead-letter queue for failed asynchronous invocations, a
  managed log group and its stage's reserved concurrency, and lets Cognito invoke the
  pre-token-generation trigger (the user pool's ``pre_token_generation_config`` is in infra/modules/cognito);
- connects the functions to Aurora as the runtime login role with IAM database authentication,
  verifying TLS against the RDS CA bundle it ships in the package (``--rds-ca-bundle``);
- checks the stage's ``CORS_ALLOWED_ORIGINS`` (.chalice/config.json) as the app will (production:
  exact https origins only, never ``*``) and gives API Gateway's own error answers (the Cognito
  authorizer's 401/403, throttling, WAF, an unknown path) the stage's first exact origin, in the
  API's own definition (``x-amazon-apigateway-gateway-responses``: a separate gateway-response
  resource would be dropped each time the definition is imported again);
- removes from deployment.zip what the Lambda Python runtime already provides
  (boto3, botocore and their dependencies: aws-xray-sdk pulls botocore in) and
  adds bytecode compiled for the runtime's Python, unchecked-hash, so a cold
  start does not compile every module.
Infrastructure chalice cannot describe (VPC, database, queues, WAF, alarms)
belongs in sibling ``.tf`` files under infra/; ``--merge-template`` is refused for
the terraform format.
"""

import argparse
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The RDS CA bundle: the functions verify Aurora's certificate against it (DB_SSL_ROOT_CERT, resolved
# against the package root). Not in the repository: download it once per machine (README, "Deploy").
CA_BUNDLE_IN_PACKAGE = "chalicelib/certs/rds-ca-bundle.pem"  # chalice deploy ships chalicelib/ too
DEFAULT_CA_BUNDLE = ROOT / CA_BUNDLE_IN_PACKAGE
CA_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
# Provided by the Lambda Python runtime: shipping them again only grows the package.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def chalice_package(stage: str, out: Path, prefix: str) -> None:
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "RESOURCE_PREFIX": prefix}
    # The Cognito authorizer's pool ARN lands in the API's swagger, which chalice
    # emits as a Terraform string: an interpolation there resolves at apply time.
    env.setdefault("COGNITO_USER_POOL_ARN", "${module.cognito.user_pool_arn}")
    # So are the routes' OAuth scopes (IDENTIFIER/read, ...): the identifier is the module's.
    env.setdefault("COGNITO_RESOURCE_SERVER", "${module.cognito.resource_server_identifier}")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.setdefault("AWS_ACCESS_KEY_ID", "packaging")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "packaging")
    if out.exists():
        shutil.rmtree(out)
    chalice = Path(sys.executable).with_name("chalice")
    subprocess.run(
        [str(chalice), "package", "--pkg-format", "terraform", "--stage", stage, str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def stage_cors_origins(stage: str, config: dict | None = None) -> tuple[str, ...]:
    """The stage's CORS_ALLOWED_ORIGINS from .chalice/config.json, as the deployed app will read them;
    a value the app would refuse (``*`` in production, say) is refused here, before anything is deployed."""
    from chalicelib.config import cors_origins

    config = config if config is not None else json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage_env = config.get("stages", {}).get(stage, {}).get("environment_variables", {})
    env = {**config.get("environment_variables", {}), **stage_env}
    return cors_origins(env.get("CORS_ALLOWED_ORIGINS", ""), env.get("STAGE", stage))


def cors_gateway_responses(origins: tuple[str, ...]) -> dict:
    """API Gateway's default 4xx and 5xx answers with the stage's first exact origin (a gateway response's
    headers are static: it cannot echo the one origin of several that asked). The body stays API Gateway's."""
    primary = next((origin for origin in origins if "*" not in origin), None)
    if primary is None:
        return {}
    headers = {
        "gatewayresponse.header.Access-Control-Allow-Origin": f"'{primary}'",
        "gatewayresponse.header.Vary": "'Origin'",
    }
    body = {"application/json": '{"message":$context.error.messageString}'}
    return {kind: {"responseParameters": headers, "responseTemplates": body} for kind in ("DEFAULT_4XX", "DEFAULT_5XX")}


def patch_terraform(document: dict, prefix: str = "billing", cors_origins: tuple[str, ...] = ()) -> dict:
    document["terraform"] = {
        "required_version": ">= 1.5.0",
        "required_providers": {"aws": {"source": "hashicorp/aws", "version": ">= 5.0, < 6.0"}},
    }
    data = document.get("data", {})
    data.pop("null_data_source", None)
    resources = document["resource"]
    for mapping in resources.get("aws_lambda_event_source_mapping", {}).values():
        if ":sqs:" in mapping.get("event_source_arn", ""):
            mapping["function_response_types"] = ["ReportBatchItemFailures"]
            # Parallelism per queue is capped here, at the function's reserved concurrency (chalice_integration.tf):
            # more pollers than the reservation would be throttled and their messages counted towards the DLQ.
            function = mapping["function_name"].split(".")[1]
            mapping["scaling_config"] = {"maximum_concurrency": f'${{local.sqs_max_concurrency["{function}"]}}'}
    for rule in resources.get("aws_cloudwatch_event_rule", {}).values():
        rule["name"] = f"{prefix}-{rule['name']}"  # chalice's names would collide between stages
    functions = resources.get("aws_lambda_function", {})
    for name, function in functions.items():
        _patch_function(name, function, prefix)
    # Every function runs under a role of its own (aws_iam_role.function, chalice_integration.tf).
    resources.pop("aws_iam_role", None)
    resources.pop("aws_iam_role_policy", None)
    resources["aws_api_gateway_rest_api"]["rest_api"]["name"] = prefix  # one API per stage, named by it
    if has_pre_token_generation(document):
        # Granted here, beside the function, so that it is created after it; the pool's
        # lambda_config names the function by an ARN built from its name (see infra/main.tf).
        resources.setdefault("aws_lambda_permission", {})["pre_token_generation-cognito"] = {
            "statement_id": "cognito-pre-token-generation",
            "function_name": "${aws_lambda_function.pre_token_generation.arn}",
            "action": "lambda:InvokeFunction",
            "principal": "cognito-idp.amazonaws.com",
            "source_arn": "${module.cognito.user_pool_arn}",
        }
    for kind in ("aws_lambda_event_source_mapping", "aws_sns_topic_subscription"):
        for resource in resources.get(kind, {}).values():
            resource["depends_on"] = ["module.messaging"]  # the queues and topics chalice names by ARN
    gateway_responses = cors_gateway_responses(cors_origins)
    if gateway_responses:  # in the definition: the deployment's trigger (its md5) sees them change
        swagger = json.loads(document["locals"]["chalice_api_swagger"])
        swagger["x-amazon-apigateway-gateway-responses"] = gateway_responses
        document["locals"]["chalice_api_swagger"] = json.dumps(swagger)
    deployment = resources["aws_api_gateway_deployment"]["rest_api"]
    stage_name = deployment.pop("stage_name")
    deployment.pop("stage_description", None)
    deployment["triggers"] = {"redeployment": "${md5(local.chalice_api_swagger)}"}
    document["output"]["EndpointURL"] = {"value": "${aws_api_gateway_stage.api.invoke_url}"}
    document["locals"]["api_stage_name"] = stage_name
    document["locals"]["billing_function_names"] = [
        f"${{aws_lambda_function.{name}.function_name}}" for name in resources.get("aws_lambda_function", {})
    ]
    # What chalice_integration.tf derives each function's role, log group and limits from.
    document["locals"]["packaged_functions"] = sorted(functions)
    document["locals"]["function_queues"] = {
        mapping["function_name"].split(".")[1]: mapping["event_source_arn"].rsplit(":", 1)[1]
        for mapping in resources.get("aws_lambda_event_source_mapping", {}).values()
        if ":sqs:" in mapping.get("event_source_arn", "")
    }
    return document


def _patch_function(name: str, function: dict, prefix: str) -> None:
    # Named by the stage's prefix (chalice's app_name-stage would collide between two stacks of one stage).
    function["function_name"] = f"{prefix}-{name}"
    variables = function.setdefault("environment", {}).setdefault("variables", {})
    variables.pop("DB_SECRET_ARN", None)
    variables.update(RUNTIME_ENV)
    function["tracing_config"] = {"mode": "Active"}
    function["vpc_config"] = {
        "subnet_ids": "${module.network.private_subnet_ids}",
        "security_group_ids": ["${module.network.lambda_security_group_id}"],
    }
    # Asynchronous invocations (the schedules, the ops topic) that failed every retry land here, and alarm.
    function["dead_letter_config"] = {"target_arn": "${module.messaging.failed_invocations_queue_arn}"}
    function["reserved_concurrent_executions"] = f'${{lookup(local.reserved_concurrency, "{name}", -1)}}'
    function["role"] = f'${{aws_iam_role.function["{name}"].arn}}'
    # The policy before the function is created (Lambda checks the DLQ and VPC permissions then) and until
    # it is gone (it needs them to release its network interfaces); its log group before its first line.
    function["depends_on"] = [
        f'aws_iam_role_policy.function["{name}"]',
        f'aws_iam_role_policy_attachment.xray["{name}"]',
        f'aws_cloudwatch_log_group.function["{name}"]',
    ]


def has_pre_token_generation(document: dict) -> bool:
    return "pre_token_generation" in document["resource"].get("aws_lambda_function", {})


# What every function reads from its environment, from the modules in infra/.
RUNTIME_ENV = {
    "SQS_REPORT_BATCH_ITEM_FAILURES": "true",
    "TRACING": "true",
    # The runtime's login role, by IAM database authentication (no password, and not the schema owner:
    # chalicelib/db/connection.py), over TLS verified against the RDS CA bundle shipped in the package.
    "DB_IAM_AUTH": "true",
    "DB_USER": "${local.db_runtime_user}",
    "DB_HOST": "${local.db_host}",
    "DB_SSL_ROOT_CERT": CA_BUNDLE_IN_PACKAGE,
    "EVENTS_TOPIC_ARN": "${module.messaging.events_topic_arn}",
    "COGNITO_USER_POOL_ID": "${module.cognito.user_pool_id}",
    "COGNITO_CLIENT_IDS": "${module.cognito.client_id}",
    "COGNITO_USER_POOL_ARN": "${module.cognito.user_pool_arn}",
    "COGNITO_RESOURCE_SERVER": "${module.cognito.resource_server_identifier}",
    "SES_SENDER": "${var.ses_sender}",
    "RESOURCE_PREFIX": "${local.prefix}",
    "CONSUMER_STALE_AFTER_S": "${6 * var.function_timeout_s}",
    # Tenants' Stripe keys: one secret each under ${var.prefix}/tenants/, encrypted with the secrets' key.
    "GATEWAY_CREDENTIALS_STORE": "secretsmanager",
    "GATEWAY_SECRETS_KMS_KEY_ID": "${module.database.kms_key_arn}",
    "PUBLIC_API_URL": "${var.public_api_url}",
    "METRICS_NAMESPACE": "${local.metrics_namespace}",
    # With an RDS Proxy in front, its certificate is ACM's (Amazon's roots, in the runtime's trust store).
    "DB_SSL_TRUST_SYSTEM": "${var.rds_proxy}",
}


def copy_infra(out: Path) -> None:
    """Our Terraform beside chalice's: one root module (with the event routing main.tf reads)."""
    infra = ROOT / "infra"
    sources = [*infra.glob("*.tf"), infra / "event_routing.json", infra / "function_access.json"]
    for source in [*sources, *(infra / "with-chalice").glob("*.tf")]:
        shutil.copy(source, out / source.name)
    shutil.copytree(ROOT / "infra" / "modules", out / "modules", dirs_exist_ok=True)


def slim_zip(path: Path, python: str = "3.11", extra: dict[str, Path] | None = None) -> tuple[int, int]:
    """Drop runtime-provided packages, add unchecked-hash bytecode and ``extra`` files (path in the package:
    source); returns (bytes before, after)."""
    before = path.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "pkg"
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tree)
        for name, source in (extra or {}).items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, tree / name)
        for entry in list(tree.iterdir()):
            top = entry.name.split("-")[0] if entry.name.endswith(".dist-info") else entry.name
            if top.replace("python_", "") in RUNTIME_PROVIDED or top in ("python_dateutil",):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if sys.version_info[:2] == tuple(int(p) for p in python.split(".")):
            for source in tree.rglob("*.py"):
                try:
                    py_compile.compile(
                        str(source), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
                    )
                except py_compile.PyCompileError:
                    pass  # a module that does not compile on this Python is left to the runtime
        path.unlink()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(tree.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(tree))
    return before, path.stat().st_size


def ca_bundle(path: Path | None = None) -> Path:
    """The RDS CA bundle to ship: given, or RDS_CA_BUNDLE, or certs/rds-ca-bundle.pem; refused unless it
    holds certificates (a package whose functions cannot verify the database would fail closed at runtime)."""
    import ssl

    path = Path(path or os.environ.get("RDS_CA_BUNDLE") or DEFAULT_CA_BUNDLE)
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(
            f"no usable RDS CA bundle at {path} ({exc}): download it with\n"
            f"  curl -fsSL -o {CA_BUNDLE_IN_PACKAGE} {CA_BUNDLE_URL}\n"
            "or pass --rds-ca-bundle PATH (README, Deploy)"
        ) from exc
    return path


def package(stage: str, out: Path, prefix: str | None = None, rds_ca_bundle: Path | None = None) -> dict:
    prefix = prefix or f"billing-{stage}"
    origins = stage_cors_origins(stage)  # first: a stage the app would refuse to serve is never packaged
    bundle = ca_bundle(rds_ca_bundle)
    chalice_package(stage, out, prefix)
    tf_path = out / "chalice.tf.json"
    document = patch_terraform(json.loads(tf_path.read_text()), prefix, origins)
    tf_path.write_text(json.dumps(document, indent=2))
    copy_infra(out)
    # The queue names chalice baked in come from RESOURCE_PREFIX: Terraform must agree. The
    # pool calls the trigger only where this package has it (its permission is in chalice.tf.json).
    trigger = "packaged" if has_pre_token_generation(document) else "none"
    (out / "prefix.auto.tfvars.json").write_text(
        json.dumps({"prefix": prefix, "stage": stage, "pre_token_generation_trigger": trigger})
    )
    before, after = slim_zip(out / "deployment.zip", extra={CA_BUNDLE_IN_PACKAGE: bundle})
    return {"stage": stage, "out": str(out), "zip_bytes_before": before, "zip_bytes": after}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", default=None)
    parser.add_argument("--prefix", default=None, help="resource prefix (default billing-STAGE)")
    parser.add_argument("--rds-ca-bundle", default=None, help=f"PEM bundle (default {CA_BUNDLE_IN_PACKAGE})")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else ROOT / "build" / args.stage
    result = package(args.stage, out, args.prefix, args.rds_ca_bundle)
    print(
        f"{out}: chalice.tf.json patched; deployment.zip {result['zip_bytes_before'] / 1e6:.1f} MB"
        f" -> {result['zip_bytes'] / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
