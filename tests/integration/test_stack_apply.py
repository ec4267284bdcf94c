"""The whole generated stack, for two stages side by side in one account, applied and taken down (#16).

`devtools.package` builds dev (prefix billing-dev) and prod (billing-prod); devtools/stack_apply.py
applies both, and infra/account/ first when there is one, to one moto server on 127.0.0.1, in a
network namespace whose only interface is the loopback (nothing can reach real AWS, or anything
else). Then it destroys dev, asks Terraform whether prod would change (it must not), looks prod's
functions, queues, database cluster, user pool and REST API up in moto, and destroys prod.

Values: dev gets infra/env/dev.tfvars and ``-var ses_sender=...``; prod gets
infra/env/prod.tfvars.example and ``-var db_deletion_protection=false`` (the example protects the
database, which a destroy could then not delete).

What moto cannot model is in MOTO_CANNOT_MODEL, with why: the test's working copies override those
resources (``*_override.tf.json`` files written only there: configuration moto cannot take replaced,
attributes it does not give back as written ignored) or forget them before a destroy, and the real
configuration is planned against the live stack instead.
"""

import json
import os
import re
import shutil
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from devtools import package, stack_apply

ROOT = Path(__file__).resolve().parents[2]
MIRROR = Path(os.environ.get("TF_PROVIDER_MIRROR", "/opt/tf-plugins"))
ACCOUNT = ROOT / "infra" / "account"
ENV = ROOT / "infra" / "env"

STAGES = {
    "dev": {
        "prefix": "billing-dev",
        "args": [f"-var-file={ENV / 'dev.tfvars'}", "-var", "ses_sender=billing@dev.example.com"],
    },
    "prod": {
        "prefix": "billing-prod",
        # The example's values (a real-looking sender and callback URL), but a database the destroy may delete.
        "args": [f"-var-file={ENV / 'prod.tfvars.example'}", "-var", "db_deletion_protection=false"],
    },
}

# What moto (5.2) cannot model, by resource address ("*": every such resource, however many the package
# has): why, and what the test's working copies do instead. Each is exactly what the working copies
# override (stack_apply.REPLACE_FILE, IGNORE_FILE) or forget before a destroy (FORGET_BEFORE_DESTROY).
MOTO_CANNOT_MODEL = {
    "aws_api_gateway_rest_api.rest_api": (
        "moto imports a REST API's definition from OpenAPI 3 only ('Only OpenAPI 3.x.x are currently "
        "supported') and chalice writes Swagger 2: the working copy's body is the same API as OpenAPI 3 "
        "(stack_apply.openapi3: the same paths, methods, integrations, authorizer and gateway responses) and "
        "the real Swagger body is planned against the live stack. And moto's UpdateRestApi takes a binary "
        "media type from a patch operation's value where API Gateway and the provider name it in the path "
        "(/binaryMediaTypes/image~1png), so it keeps empty entries: binary_media_types drift is ignored"
    ),
    "aws_api_gateway_method_settings.throttle": (
        "moto keys a stage's method setting by the patch path's first two segments without unescaping ~1, so "
        "a setting for a resource path with a '/' (v1/events/POST) lands under another key and the provider's "
        "read-back finds nothing ('empty result'): the working copy applies the settings of one-segment "
        "paths (*/*) only, and the others are planned against the live stack"
    ),
    "aws_lambda_function.*": (
        "moto's Lambda keeps no DeadLetterConfig (GetFunction gives none back), so every function would plan "
        "an update: dead_letter_config drift is ignored"
    ),
    "module.messaging.aws_sqs_queue.*": (
        "moto gives a queue's RedrivePolicy back re-serialised (json.dumps spacing) and the provider plans an "
        "update for the whitespace: redrive_policy drift is ignored"
    ),
    "module.database.aws_rds_cluster.this": (
        "moto gives every cluster a ScalingConfigurationInfo (Serverless v1), empty for this provisioned "
        "Serverless v2 cluster, which the provider reads as a block to remove: scaling_configuration drift is ignored"
    ),
    "module.database.aws_rds_cluster_instance.this": (
        "moto's DB instances keep no Performance Insights settings (enabled, key, retention come back off): "
        "performance_insights_* drift is ignored"
    ),
    "module.cognito.aws_cognito_user_pool.this": (
        "moto does not model a user pool's feature plan (UserPoolTier ESSENTIALS comes back empty): "
        "user_pool_tier drift is ignored"
    ),
    "module.cognito.aws_cognito_resource_server.billing": (
        "moto does not implement cognito-idp DeleteResourceServer: the server is removed from the state "
        "before a destroy, and deleting its user pool deletes it with it in moto"
    ),
}

pytestmark = [
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine"),
    pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)"),
]


@pytest.fixture(scope="module")
def ca_bundle():
    """Any valid CA bundle stands in for the RDS one (downloaded, not in the repository): nothing here
    connects to the database."""
    import certifi

    return Path(certifi.where())


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, ca_bundle):
    """Each stage packaged once: the directories `terraform apply` would run in."""
    out = tmp_path_factory.mktemp("package")
    for stage, settings in STAGES.items():
        package.package(stage, out / stage, settings["prefix"], rds_ca_bundle=ca_bundle)
    return {stage: out / stage for stage in STAGES}


@pytest.fixture(scope="module")
def stack(packaged, tmp_path_factory):
    """The whole run (apply both, destroy dev, check prod, destroy prod), once: its report."""
    missing = stack_apply.isolation_missing()
    if missing:
        pytest.skip(missing)
    spec = {
        "scratch": str(tmp_path_factory.mktemp("stack")),
        "mirror": str(MIRROR),
        "parallelism": 20,
        # One Terraform per stage at once: the AWS provider creates one function from a file at a
        # time (about 6 s each here), so one stage after the other would double the apply's time.
        "stages_in_parallel": True,
        "account": {"name": "account", "source": str(ACCOUNT), "args": []} if ACCOUNT.is_dir() else None,
        "stages": [{"name": stage, "source": str(packaged[stage]), "args": STAGES[stage]["args"]} for stage in STAGES],
    }
    report = stack_apply.run_isolated(spec)
    print(f"\nstack_apply: {report['wall_seconds']} s in all; per command: {json.dumps(report['seconds'])}")
    print(f"requests moto answered again: {report['replayed']}; the SDK retried: {report['retried']}")
    return report


def _failure(report: dict) -> str:
    step = next(s for s in report["steps"] if not s["ok"])
    errors = "\n".join(f"  {e['address']}: {e['error']}" for e in step["errors"]) or "  (none parsed)"
    retried = f"\nthe SDK retried {report['retried']}; moto answered again {report['replayed']}"
    return f"{report['failed']} failed (exit {step['exit_code']}; log {step['log']}):\n{errors}{retried}"


def _resource(address: str) -> str:
    """An instance's resource address: module.a["k"].type.name["x"] -> module.a.type.name."""
    return re.sub(r"\[[^\]]*\]", "", address)


def test_what_two_root_modules_both_name_is_found_and_what_only_looks_alike_is_not():
    # An alarm named after the API ("billing-platform"), not the stage: PutMetricAlarm overwrites.
    alarm = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:billing-platform-5xx"

    def state(**values):
        return {address: {"type": address.split(".")[-2], **v} for address, v in values.items()}

    dev = state(
        **{
            "aws_api_gateway_account.this": {"id": "api-gateway-account"},  # one per account and region
            "m.aws_cloudwatch_metric_alarm.x": {"id": "billing-platform-5xx", "arn": alarm},
            "aws_lambda_permission.cognito": {"function_name": "billing-dev-f", "statement_id": "cognito"},
            "aws_cloudwatch_event_target.f": {"id": "billing-dev-rule-1", "arn": "arn:function:billing-dev-f"},
        }
    )
    prod = state(
        **{
            "aws_api_gateway_account.this": {"id": "api-gateway-account"},
            "m.aws_cloudwatch_metric_alarm.x": {"id": "billing-platform-5xx", "arn": alarm},
            "aws_lambda_permission.cognito": {"function_name": "billing-prod-f", "statement_id": "cognito"},
            "aws_cloudwatch_event_target.f": {"id": "billing-prod-rule-1", "arn": "arn:function:billing-prod-f"},
            "aws_lambda_function.f": {"id": "billing-prod-f", "arn": "arn:function:billing-prod-f"},  # its target
        }
    )
    found = stack_apply.shared({"dev": stack_apply.identities(dev), "prod": stack_apply.identities(prod)})
    assert found == {
        "aws_api_gateway_account:api-gateway-account": [
            "dev: aws_api_gateway_account.this",
            "prod: aws_api_gateway_account.this",
        ],
        alarm: [
            "dev: m.aws_cloudwatch_metric_alarm.x",
            "prod: m.aws_cloudwatch_metric_alarm.x",
        ],
    }


def test_the_stack_runs_where_nothing_but_loopback_is_reachable(stack):
    assert stack["network"] == {"interfaces": ["lo"], "connect_out": "ENETUNREACH"}


def test_dev_and_prod_apply_side_by_side_and_destroying_dev_leaves_prod_intact(stack):
    stages = list(STAGES)
    roots = (["account"] if ACCOUNT.is_dir() else []) + stages
    shared = stack_apply.shared(stack["identities"])
    collisions = f"\nnamed by two root modules: {json.dumps(shared, indent=1)}" if shared else ""
    assert stack["failed"] is None, _failure(stack) + collisions
    assert stack["unimplemented"] == [], "moto answered 501 (not implemented) to these"
    assert stack["server_errors"] == [], "moto failed these"
    # Each stage's names are its own: nothing in the account is named by two root modules.
    assert shared == {}, json.dumps(shared, indent=1)

    # Everything each plan would create was created, and nothing else.
    for root in roots:
        assert set(stack["planned"][root]) == set(stack["state"][root]), root
        assert {tuple(actions) for actions in stack["planned"][root].values()} == {("create",)}, root
    # The key resources of both stages are in the account.
    for stage in stages:
        keys = stack["key_resources"][stage]
        assert all(keys[kind] for kind in stack_apply.KEY_RESOURCES), (stage, keys)
        found = stack["looked_up"]["applied"][stage]
        assert all(all(ids.values()) for ids in found.values()), (stage, found)

    # dev destroyed: prod's plan has nothing to do (0, not 2) and its resources are still there.
    assert stack["state_after_destroy"]["dev"] == []
    for stage in stages[1:]:
        check = stack["plan_after_destroying"][stage]
        assert check["exit_code"] == 0, (stage, check["changes"])
        found = stack["looked_up"]["after destroying dev"][stage]
        assert all(all(ids.values()) for ids in found.values()), (stage, found)
    gone = stack["looked_up"]["after destroying dev"]["dev"]
    assert not any(any(ids.values()) for ids in gone.values()), gone

    # prod destroyed, then the account module: nothing of either stage is left.
    assert all(stack["state_after_destroy"][root] == [] for root in roots)
    left = stack["looked_up"]["after destroying all"]
    assert not any(any(ids.values()) for stage in stages for ids in left[stage].values()), left


def test_what_moto_cannot_model_is_listed_with_why_and_the_real_configuration_is_planned_instead(stack):
    assert all(len(why) > 80 for why in MOTO_CANNOT_MODEL.values())
    for stage in STAGES:
        files = stack["overridden"][stage]
        worked_around = {*files[stack_apply.REPLACE_FILE], *files[stack_apply.IGNORE_FILE]}
        worked_around |= set(stack.get("forgotten", {}).get(stage, []))
        matched = {a: [key for key in MOTO_CANNOT_MODEL if fnmatchcase(a, key)] for a in worked_around}
        assert {address: keys for address, keys in matched.items() if len(keys) != 1} == {}, stage
        assert {keys[0] for keys in matched.values()} == set(MOTO_CANNOT_MODEL), stage
    if "account" in stack["overridden"]:
        assert all(addresses == [] for addresses in stack["overridden"]["account"].values())
        assert stack.get("forgotten", {}).get("account", []) == []
    assert stack["failed"] is None, _failure(stack)
    # prod's real configuration (no replacements), planned against what the working copy made: it
    # changes only what was replaced, in place or by adding to it.
    for stage in list(STAGES)[1:]:
        real = stack["plan_without_replacements"][stage]
        replaced = set(stack["overridden"][stage][stack_apply.REPLACE_FILE])
        assert real["exit_code"] == 2, real
        assert {_resource(address) for address in real["changes"]} <= replaced, real
        assert real["changes"]["aws_api_gateway_rest_api.rest_api"] == ["update"]
        assert all(actions in (["update"], ["create"]) for actions in real["changes"].values()), real


def test_the_openapi3_body_moto_imports_is_chalices_api(packaged):
    from openapi_spec_validator import validate

    tf = json.loads((packaged["dev"] / "chalice.tf.json").read_text())
    swagger = json.loads(tf["locals"]["chalice_api_swagger"])
    openapi = stack_apply.openapi3(swagger)
    validate(openapi)  # a valid OpenAPI 3.0 document, Terraform's ${...} references and all
    assert openapi["paths"].keys() == swagger["paths"].keys()
    for path, methods in swagger["paths"].items():
        assert openapi["paths"][path].keys() == methods.keys(), path
        for method, operation in methods.items():
            converted = openapi["paths"][path][method]
            for key in ("x-amazon-apigateway-integration", "security"):
                assert converted.get(key) == operation.get(key), (method, path, key)
            assert converted["responses"].keys() == operation["responses"].keys(), (method, path)
            names = [p["name"] for p in converted.get("parameters", [])]
            assert names == [p["name"] for p in operation.get("parameters", []) if p["in"] != "body"]
    assert openapi["components"]["securitySchemes"] == swagger["securityDefinitions"]
    for key in [k for k in swagger if k.startswith("x-")]:
        assert openapi[key] == swagger[key], key
