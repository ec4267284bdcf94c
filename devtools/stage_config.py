"""Write infra/'s Terraform outputs into a .chalice/config.json stage, for `chalice deploy`.

    terraform -chdir=infra output -json > /tmp/outputs.json
    python -m devtools.stage_config --stage prod --outputs /tmp/outputs.json
    COGNITO_USER_POOL_ARN=<cognito_user_pool_arn> chalice deploy --stage prod
    terraform -chdir=infra apply -var-file=env/prod.tfvars -var pre_token_generation_trigger=deployed

The Terraform path (`python -m devtools.package`) wires all of this itself; this
is the `chalice deploy` path: apply infra/ on its own first (VPC, database,
queues, Cognito), then let chalice deploy the functions into it, then attach the
pre-token-generation function chalice made to the user pool (the last command: the
one step chalice cannot do). The API stage extras (WAF, access logs, throttling,
alarms, managed log groups, dead-letter queues) come with the Terraform path only.

Each function gets a policy file of its own from its row of infra/function_access.json (the
table the Terraform path grants from too) and its reserved concurrency from infra/'s outputs.
The functions log in to Aurora as the runtime role with IAM authentication and verify TLS
against the RDS CA bundle, which must be at chalicelib/certs/rds-ca-bundle.pem (README, Deploy).
"""

import argparse
import json
import sys
from pathlib import Path

from chalicelib.config import get_settings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".chalice" / "config.json"
ACCESS = ROOT / "infra" / "function_access.json"
ENV_FROM_OUTPUTS = {
    "DB_USER": "db_runtime_user",
    "DB_HOST": "db_host",
    "EVENTS_TOPIC_ARN": "events_topic_arn",
    "COGNITO_USER_POOL_ID": "cognito_user_pool_id",
    "COGNITO_CLIENT_IDS": "cognito_client_id",
    "COGNITO_USER_POOL_ARN": "cognito_user_pool_arn",
    "COGNITO_RESOURCE_SERVER": "cognito_resource_server",
    "SES_SENDER": "ses_sender",
    "RESOURCE_PREFIX": "resource_prefix",
    "GATEWAY_SECRETS_KMS_KEY_ID": "gateway_secrets_kms_key_arn",
    "PUBLIC_API_URL": "public_api_url",
    "METRICS_NAMESPACE": "metrics_namespace",
    "DB_SSL_TRUST_SYSTEM": "db_ssl_trust_system",
}
# Lambda polls an SQS queue with five pollers, and chalice deploy cannot cap a mapping's concurrency:
# a consumer reserved below this would have its pollers throttled and its messages dead-lettered.
MIN_SQS_CONSUMER_RESERVATION = 5


def base_statements(log_group_arn: str) -> list[dict]:
    """Every function: its own log group, the network interfaces of a function in the VPC, X-Ray."""
    return [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn, f"{log_group_arn}:*"],
        },
        {
            "Effect": "Allow",
            "Action": [
                "ec2:CreateNetworkInterface",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSubnets",
                "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
            ],
            "Resource": "*",
        },
        {"Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*"},
    ]


def chalice_function_name(stage: str, function: str) -> str:
    """What chalice deploy names a function: the app's name and stage, and the function's, but the API's."""
    return f"billing-platform-{stage}" if function == "api_handler" else f"billing-platform-{stage}-{function}"


def consumed_queues() -> dict[str, str]:
    """Each SQS consumer of app.py and the queue it polls (by name, as packaged for this process's prefix)."""
    from app import app

    return {source.name: source.queue for source in app.event_sources if getattr(source, "queue", None)}


def function_policies(values: dict, stage: str) -> dict[str, dict]:
    """Each function's policy: its row of infra/function_access.json, with the resources infra/ output."""
    access, arns = json.loads(ACCESS.read_text()), values["function_resource_arns"]
    queues = {arn.rsplit(":", 1)[1]: arn for arn in values["queue_arns"]}
    prefix, policies = values["resource_prefix"], {}
    for function, needs in access["functions"].items():
        group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{chalice_function_name(stage, function)}"
        statements = base_statements(group)
        queue = consumed_queues().get(function)
        if queue:  # named for this process's prefix; the stage's queue has the stage's
            own = queues[f"{prefix}-{queue.removeprefix(get_settings().resource_prefix + '-')}"]
            actions = [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
            ]
            statements.append({"Effect": "Allow", "Action": actions, "Resource": own})
            statements.append({"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": arns["messaging_key"]})
        for need in needs:
            for grant in access["grants"][need]:
                resources = [arns[name] for name in grant["resources"]]
                statements.append({"Effect": "Allow", "Action": grant["actions"], "Resource": resources})
        policies[function] = {"Version": "2012-10-17", "Statement": statements}
    return policies


def reservations(values: dict) -> dict[str, int]:
    """infra/'s reserved concurrency per function (sized to the database's connections), refused where an
    SQS consumer's would throttle its pollers on this path."""
    reserved = {name: int(n) for name, n in values["reserved_concurrency"].items()}
    low = sorted(f for f in consumed_queues() if reserved.get(f, 0) < MIN_SQS_CONSUMER_RESERVATION)
    if low:
        raise SystemExit(f"reserved_concurrency below {MIN_SQS_CONSUMER_RESERVATION} for SQS consumers {low}")
    return reserved


def apply(config: dict, stage: str, outputs: dict, policy_dir: Path | None = None) -> dict:
    values = {name: entry["value"] for name, entry in outputs.items()}
    settings = config["stages"].setdefault(stage, {})
    directory = policy_dir or CONFIG.parent
    policies = function_policies(values, stage)
    settings["autogen_policy"] = False
    # The stage's default, used by no function (each has its own below): logs only.
    settings["iam_policy_file"] = f"policy-{stage}.json"
    stage_logs = {
        "Version": "2012-10-17",
        "Statement": base_statements(f"arn:aws:logs:*:*:log-group:/aws/lambda/billing-platform-{stage}-*")[:1],
    }
    directory.joinpath(settings["iam_policy_file"]).write_text(json.dumps(stage_logs, indent=2) + "\n")
    functions = settings.setdefault("lambda_functions", {})
    for function, policy in policies.items():
        name = f"policy-{stage}-{function}.json"
        directory.joinpath(name).write_text(json.dumps(policy, indent=2) + "\n")
        functions.setdefault(function, {})["iam_policy_file"] = name
    for function, reserved in reservations(values).items():
        functions.setdefault(function, {})["reserved_concurrency"] = reserved
    settings.setdefault("environment_variables", {}).update(_environment(values, settings))
    settings["subnet_ids"] = list(values["lambda_subnet_ids"])
    settings["security_group_ids"] = [values["lambda_security_group_id"]]
    settings["xray"] = True
    return config


def _environment(values: dict, settings: dict) -> dict:
    from devtools import package

    package.ca_bundle(package.DEFAULT_CA_BUNDLE)  # chalice deploy ships chalicelib/: the bundle must be there
    env = {var: str(values[out]) for var, out in ENV_FROM_OUTPUTS.items()}
    env["DB_IAM_AUTH"] = "true"  # the runtime login role, never the owner's secret
    env["DB_SSL_ROOT_CERT"] = package.CA_BUNDLE_IN_PACKAGE
    # chalice deploy cannot set ReportBatchItemFailures: handlers must fail whole batches.
    env["SQS_REPORT_BATCH_ITEM_FAILURES"] = "false"
    env["TRACING"] = "true"
    env["GATEWAY_CREDENTIALS_STORE"] = "secretsmanager"  # tenants' Stripe keys, under the prefix above
    # Claims go stale after the queues' visibility timeout (6 x the 30 s function timeout).
    env["CONSUMER_STALE_AFTER_S"] = str(6 * int(settings.get("lambda_timeout", 30)))
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--outputs", required=True, help="file with `terraform output -json`")
    parser.add_argument("--config", default=str(CONFIG))
    args = parser.parse_args(argv)
    path = Path(args.config)
    outputs = json.loads(Path(args.outputs).read_text())
    config = apply(json.loads(path.read_text()), args.stage, outputs, policy_dir=path.parent)
    path.write_text(json.dumps(config, indent=2) + "\n")
    arn = config["stages"][args.stage]["environment_variables"]["COGNITO_USER_POOL_ARN"]
    print(f"updated {path} stage {args.stage}")
    print(f"deploy with: COGNITO_USER_POOL_ARN={arn} chalice deploy --stage {args.stage}")
    print("then attach the token trigger: terraform apply infra/ with -var pre_token_generation_trigger=deployed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
