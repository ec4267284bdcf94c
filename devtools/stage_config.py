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
alarms) come with the Terraform path only.
"""

import argparse
import json
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / ".chalice" / "config.json"
ENV_FROM_OUTPUTS = {
    "DB_SECRET_ARN": "db_secret_arn",
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
}


# Logs, the network interfaces of a function in the VPC, and X-Ray: every function.
BASE_STATEMENTS = [
    {
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": "arn:*:logs:*:*:*",
    },
    {
        "Effect": "Allow",
        "Action": [
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        ],
        "Resource": "*",
    },
    {"Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*"},
]
# The user pool's tenant admins (onboarding: the API and the send-notification consumer) and
# machine clients (/v1/api_clients: the API), as infra/with-chalice/chalice_integration.tf grants them.
TENANT_ADMINS = ["cognito-idp:AdminCreateUser", "cognito-idp:AdminGetUser", "cognito-idp:AdminAddUserToGroup"]
MACHINE_CLIENTS = [
    "cognito-idp:CreateUserPoolClient",
    "cognito-idp:DeleteUserPoolClient",
]


def runtime_policy(values: dict) -> dict:
    """What the functions call. chalice's generated policy cannot see calls made through chalicelib.aws."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            *BASE_STATEMENTS,
            {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": values["db_secret_arn"]},
            {
                "Effect": "Allow",
                "Action": [
                    "secretsmanager:GetSecretValue",
                    "secretsmanager:CreateSecret",
                    "secretsmanager:PutSecretValue",
                    "secretsmanager:TagResource",
                ],
                "Resource": f"arn:*:secretsmanager:*:*:secret:{values['resource_prefix']}/tenants/*",
            },
            {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": values["kms_key_arns"]},
            {"Effect": "Allow", "Action": ["sns:Publish"], "Resource": values["events_topic_arn"]},
            {
                "Effect": "Allow",
                "Action": [
                    "sqs:SendMessage",
                    "sqs:GetQueueUrl",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:ChangeMessageVisibility",
                ],
                "Resource": values["queue_arns"],
            },
            {"Effect": "Allow", "Action": ["ses:SendEmail"], "Resource": "*"},
        ],
    }


def function_policies(values: dict) -> dict[str, dict]:
    """The functions whose policy differs from the runtime policy, each with its own."""
    runtime, pool = runtime_policy(values), values["cognito_user_pool_arn"]
    cognito = lambda actions: {"Effect": "Allow", "Action": actions, "Resource": pool}  # noqa: E731
    database = [
        *BASE_STATEMENTS,
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": values["db_secret_arn"]},
        {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": values["gateway_secrets_kms_key_arn"]},
    ]
    return {
        "api_handler": {**runtime, "Statement": [*runtime["Statement"], cognito(TENANT_ADMINS + MACHINE_CLIENTS)]},
        "send_notification": {**runtime, "Statement": [*runtime["Statement"], cognito(TENANT_ADMINS)]},
        # The trigger reads the tenant from the database and nothing else.
        "pre_token_generation": {"Version": "2012-10-17", "Statement": database},
        # The operator's bootstrap: the database, and the pool's admins.
        "bootstrap_operator": {"Version": "2012-10-17", "Statement": [*database, cognito(TENANT_ADMINS)]},
    }


def apply(config: dict, stage: str, outputs: dict, policy_dir: Path | None = None) -> dict:
    values = {name: entry["value"] for name, entry in outputs.items()}
    settings = config["stages"].setdefault(stage, {})
    policy_name = f"policy-{stage}.json"
    (policy_dir or CONFIG.parent).joinpath(policy_name).write_text(json.dumps(runtime_policy(values), indent=2) + "\n")
    settings["autogen_policy"] = False
    settings["iam_policy_file"] = policy_name
    functions = settings.setdefault("lambda_functions", {})
    for function, policy in function_policies(values).items():
        name = f"policy-{stage}-{function}.json"
        (policy_dir or CONFIG.parent).joinpath(name).write_text(json.dumps(policy, indent=2) + "\n")
        functions.setdefault(function, {})["iam_policy_file"] = name
    env = settings.setdefault("environment_variables", {})
    env.update({var: str(values[out]) for var, out in ENV_FROM_OUTPUTS.items()})
    # chalice deploy cannot set ReportBatchItemFailures: handlers must fail whole batches.
    env["SQS_REPORT_BATCH_ITEM_FAILURES"] = "false"
    env["TRACING"] = "true"
    env["GATEWAY_CREDENTIALS_STORE"] = "secretsmanager"  # tenants' Stripe keys, under the prefix above
    # Claims go stale after the queues' visibility timeout (6 x the 30 s function timeout).
    env["CONSUMER_STALE_AFTER_S"] = str(6 * int(settings.get("lambda_timeout", 30)))
    settings["subnet_ids"] = list(values["lambda_subnet_ids"])
    settings["security_group_ids"] = [values["lambda_security_group_id"]]
    settings["xray"] = True
    functions.setdefault("api_handler", {})["reserved_concurrency"] = 50
    functions.setdefault("rebill_processor", {})["reserved_concurrency"] = 4
    return config


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
