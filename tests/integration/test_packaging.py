"""The deployable artefacts: chalice's Terraform, patched, and a slim deployment package."""

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from devtools import package

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
    assert len(sqs) == 4
    assert all(m["function_response_types"] == ["ReportBatchItemFailures"] for m in sqs)
    rebill = next(m for m in sqs if m["event_source_arn"].endswith(":billing-rebill"))
    assert (rebill["batch_size"], rebill["maximum_batching_window_in_seconds"]) == (100, 5)
    for function in tf["resource"]["aws_lambda_function"].values():
        assert function["environment"]["variables"]["SQS_REPORT_BATCH_ITEM_FAILURES"] == "true"
        assert function["tracing_config"] == {"mode": "Active"}


def test_every_queue_the_handlers_name_is_in_the_generated_mappings(built):
    from app import app

    _out, _result, tf = built
    arns = {m["event_source_arn"] for m in tf["resource"]["aws_lambda_event_source_mapping"].values()}
    for source in app.event_sources:
        if getattr(source, "queue", None):
            assert any(arn.endswith(f":{source.queue}") for arn in arns), source.queue


def test_the_package_ships_no_runtime_provided_libraries_and_stays_small(built):
    out, result, _tf = built
    with zipfile.ZipFile(out / "deployment.zip") as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert not tops & {"boto3", "botocore", "s3transfer", "dateutil", "urllib3"}
    assert {"app.py", "chalicelib", "pg8000", "chalice"} <= tops
    assert "__pycache__" in tops  # bytecode for the runtime's Python ships with the code
    assert result["zip_bytes"] <= 10 * 1024 * 1024


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
@pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no offline provider mirror at {MIRROR} (set TF_PROVIDER_MIRROR)")
def test_generated_terraform_inits_offline_and_validates(built, tmp_path):
    out, _result, _tf = built
    config = tmp_path / "terraformrc"
    providers = '["registry.terraform.io/*/*"]'
    config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{MIRROR}"\n    include = {providers}\n  }}\n'
        f"  direct {{\n    exclude = {providers}\n  }}\n"
        "}\n"
    )
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    for command in (
        ["terraform", "init", "-backend=false", "-input=false", "-no-color"],
        ["terraform", "validate", "-no-color"],
    ):
        result = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
