"""Whole packaged stacks applied to one moto server on loopback, with no route out.

    unshare -n sh -c 'ip link set lo up && exec python -m devtools.stack_apply SPEC.json REPORT.json'

SPEC names the Terraform root modules (``devtools.package`` output directories, and the account
module infra/account/ when there is one) and their variables. In a fresh network namespace where only
the loopback interface is up, this starts a moto server (one account), copies each root module into a
working copy of its own (its own state), writes there the overrides for what moto cannot model
(``OVERRIDES``: configuration it cannot take replaced, attributes it does not give back as written
ignored), runs ``terraform init`` against the offline provider mirror, and then:

1. applies the account module (if any), then the stages (at once, or one after the other): plan, then
   apply of that plan; records the plan's resources and the state's;
2. looks every stage's key resources up in moto (functions, queues, database cluster, user pool,
   REST API), by the identifiers in its state;
3. destroys the first stage; plans every other stage (``-detailed-exitcode``: 0 is no change), plans
   it again without the replacements (the real configuration against what was made), and looks the
   key resources up again;
4. destroys the other stages, then the account module, and looks everything up once more.

A destroy first forgets what moto cannot delete (``FORGET_BEFORE_DESTROY``). The run stops at the
first step that fails; REPORT (JSON) says what happened, step by step, with the errors Terraform gave
per resource address, every command's time and what moto failed to answer. Nothing here asserts:
the test that runs it does (tests/integration/test_stack_apply.py).
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# In a working copy's module directories: what replaces configuration moto cannot take (REPLACE), and
# what only ignores attributes moto does not give back as written (IGNORE).
REPLACE_FILE, IGNORE_FILE = "moto_override.tf.json", "moto_drift_override.tf.json"
# What a Terraform command may take at most (a stage's apply takes about two minutes here).
COMMAND_TIMEOUT_S = 600


# --- OpenAPI 3 from chalice's Swagger 2 ---------------------------------------------------------------------


def openapi3(swagger: dict) -> dict:
    """The same API as an OpenAPI 3.0 document: paths, methods, parameters, integrations, security,
    gateway responses and binary media types unchanged; only what OpenAPI 3 spells differently moves
    (definitions -> components.schemas, securityDefinitions -> components.securitySchemes, a
    parameter's type -> its schema, a response's schema -> its content per media type)."""

    def refs(value):
        if isinstance(value, dict):
            return {
                k: (v.replace("#/definitions/", "#/components/schemas/") if k == "$ref" else refs(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [refs(v) for v in value]
        return value

    document = {"openapi": "3.0.1", "info": swagger["info"], "paths": {}, "components": {}}
    if "definitions" in swagger:
        document["components"]["schemas"] = refs(swagger["definitions"])
    if "securityDefinitions" in swagger:
        document["components"]["securitySchemes"] = swagger["securityDefinitions"]
    for key, value in swagger.items():
        if key.startswith("x-"):
            document[key] = value
    for path, methods in swagger["paths"].items():
        converted = document["paths"][path] = {}
        for method, operation in methods.items():
            if method == "parameters":
                converted[method] = [_parameter(p) for p in operation]
                continue
            produces = operation.get("produces") or swagger.get("produces") or ["application/json"]
            out = {k: v for k, v in operation.items() if k not in ("consumes", "produces", "parameters", "responses")}
            parameters = [p for p in operation.get("parameters", []) if p.get("in") != "body"]
            if parameters:
                out["parameters"] = [_parameter(p) for p in parameters]
            body = next((p for p in operation.get("parameters", []) if p.get("in") == "body"), None)
            if body is not None:
                consumes = operation.get("consumes") or swagger.get("consumes") or ["application/json"]
                out["requestBody"] = {
                    "required": body.get("required", False),
                    "content": {mime: {"schema": refs(body.get("schema", {}))} for mime in consumes},
                }
            out["responses"] = {}
            for code, response in operation.get("responses", {}).items():
                answer = {"description": response.get("description", "")}
                if "schema" in response:
                    answer["content"] = {mime: {"schema": refs(response["schema"])} for mime in produces}
                if "headers" in response:
                    answer["headers"] = {
                        name: {"schema": {k: v for k, v in header.items() if k != "description"}}
                        for name, header in response["headers"].items()
                    }
                out["responses"][code] = answer
            converted[method] = out
    return document


def _parameter(parameter: dict) -> dict:
    schema_keys = ("type", "format", "items", "enum", "default", "minimum", "maximum", "pattern")
    out = {k: v for k, v in parameter.items() if k not in schema_keys}
    schema = {k: v for k, v in parameter.items() if k in schema_keys}
    if schema:
        out["schema"] = schema
    return out


# --- the working copy's modules and resource blocks -------------------------------------------------------


def modules(work: Path) -> dict[Path, list[str]]:
    """Module directory -> the address prefixes it is called under ("" for the root module)."""
    found: dict[Path, list[str]] = {work.resolve(): [""]}
    pending = [(work.resolve(), "")]
    while pending:
        directory, prefix = pending.pop()
        for path in sorted(directory.glob("*.tf")):
            text = path.read_text()
            for call in re.finditer(r'^module\s+"([^"]+)"\s*\{', text, re.M):
                source = re.compile(r'^\s*source\s*=\s*"([^"]+)"', re.M).search(text, call.end())
                if source and source.group(1).startswith("."):
                    child = (directory / source.group(1)).resolve()
                    address = f"{prefix}module.{call.group(1)}."
                    found.setdefault(child, []).append(address)
                    pending.append((child, address))
    return found


def resource_blocks(directory: Path) -> list[tuple[str, str, str]]:
    """(type, name, text) of every resource block in a module directory's .tf and .tf.json files."""
    blocks = []
    start = re.compile(r'^resource\s+"([^"]+)"\s+"([^"]+)"\s*\{', re.M)
    for path in sorted(directory.glob("*.tf")):
        text = path.read_text()
        for found in start.finditer(text):
            end = re.compile(r"^\}", re.M).search(text, found.end())
            blocks.append((found.group(1), found.group(2), text[found.start() : end.end() if end else len(text)]))
    for path in sorted(directory.glob("*.tf.json")):
        if path.name.endswith("override.tf.json"):
            continue
        for kind, resources in json.loads(path.read_text()).get("resource", {}).items():
            blocks += [(kind, name, json.dumps(body)) for name, body in resources.items()]
    return blocks


# --- what moto cannot model, and what the working copy says instead ------------------------------------------


def _rest_api_as_openapi3(directory: Path, kind: str, name: str, text: str) -> dict | None:
    if (kind, name) != ("aws_api_gateway_rest_api", "rest_api") or not (directory / "chalice.tf.json").exists():
        return None
    document = json.loads((directory / "chalice.tf.json").read_text())
    if json.loads(text).get("body") != "${local.chalice_api_swagger}":
        raise ValueError("aws_api_gateway_rest_api.rest_api's body is no longer chalice's swagger: update OVERRIDES")
    return {"body": json.dumps(openapi3(json.loads(document["locals"]["chalice_api_swagger"])))}


def _method_settings_of_one_segment_paths(directory: Path, kind: str, name: str, text: str) -> dict | None:
    if (kind, name) != ("aws_api_gateway_method_settings", "throttle"):
        return None
    if not re.search(r"^\s*for_each\s*=\s*var\.api_throttle\s*$", text, re.M):
        raise ValueError("aws_api_gateway_method_settings.throttle no longer iterates var.api_throttle")
    # "*/*" and "health/GET" kept; "v1/events/POST" (a resource path with a "/") left out.
    return {"for_each": '${{ for path, limits in var.api_throttle : path => limits if length(split("/", path)) == 2 }}'}


# Attributes moto does not give back as written, per resource type: the working copy ignores their
# drift (lifecycle.ignore_changes, with what the block ignores already), or no plan would ever be clean.
IGNORE_DRIFT = {
    "aws_lambda_function": ["dead_letter_config"],
    "aws_sqs_queue": ["redrive_policy"],
    "aws_rds_cluster": ["scaling_configuration"],
    "aws_rds_cluster_instance": [
        "performance_insights_enabled",
        "performance_insights_kms_key_id",
        "performance_insights_retention_period",
    ],
    "aws_cognito_user_pool": ["user_pool_tier"],
    "aws_api_gateway_rest_api": ["binary_media_types"],
}


def _ignored_drift(directory: Path, kind: str, name: str, text: str) -> dict | None:
    if kind not in IGNORE_DRIFT:
        return None
    if text.startswith("{"):
        ignored = json.loads(text).get("lifecycle", {}).get("ignore_changes", [])
    else:
        found = re.search(r"^\s*ignore_changes\s*=\s*(.*)$", text, re.M)
        if found and not found.group(1).startswith("["):
            raise ValueError(f"{kind}.{name} ignores {found.group(1)}: update IGNORE_DRIFT's override")
        ignored = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", found.group(1).split("#")[0]) if found else []
    return {"lifecycle": {"ignore_changes": sorted({*ignored, *IGNORE_DRIFT[kind]})}}


# What a working copy overrides, per file: each function gives a resource block's override (or None).
# Why each is needed is the test's to say (MOTO_CANNOT_MODEL there).
OVERRIDES = {
    REPLACE_FILE: (_rest_api_as_openapi3, _method_settings_of_one_segment_paths),
    IGNORE_FILE: (_ignored_drift,),
}

# Resource types moto can create but not delete: removed from a working copy's state before it is
# destroyed, and left to what deleting their parent takes with it. Why is the test's to say.
FORGET_BEFORE_DESTROY = ("aws_cognito_resource_server",)


def write_overrides(work: Path) -> dict[str, list[str]]:
    """Writes the OVERRIDES files into the module directories of a working copy that need them; returns
    the addresses each file overrides, read back from the files."""
    for directory in modules(work):
        blocks = resource_blocks(directory)
        for file, makers in OVERRIDES.items():
            merged: dict = {}
            for kind, name, text in blocks:
                for make in makers:
                    override = make(directory, kind, name, text)
                    if override:
                        merged.setdefault("resource", {}).setdefault(kind, {}).setdefault(name, {}).update(override)
            if merged:
                (directory / file).write_text(json.dumps(merged, indent=2))
    return {file: overridden(work, file) for file in OVERRIDES}


def overridden(work: Path, file: str) -> list[str]:
    addresses = []
    for directory, prefixes in modules(work).items():
        if (directory / file).exists():
            for kind, resources in json.loads((directory / file).read_text()).get("resource", {}).items():
                addresses += [f"{prefix}{kind}.{name}" for prefix in prefixes for name in resources]
    return sorted(addresses)


# --- Terraform ------------------------------------------------------------------------------------------------


def terraformrc(path: Path, mirror: Path) -> Path:
    providers = '["registry.terraform.io/*/*"]'
    path.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{mirror}"\n    include = {providers}\n  }}\n'
        f"  direct {{\n    exclude = {providers}\n  }}\n"
        "}\n"
    )
    return path


def aws_env(endpoint: str) -> dict:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class Terraform:
    def __init__(self, name: str, work: Path, args: list[str], env: dict, logs: Path, parallelism: int):
        self.name, self.work, self.args, self.env, self.logs = name, work, args, env, logs
        self.parallelism = f"-parallelism={parallelism}"

    def run(self, label: str, *command: str, ok: tuple[int, ...] = (0,)) -> dict:
        started = time.monotonic()
        log = self.logs / f"{self.name}-{label}.log"
        process = subprocess.Popen(
            ["terraform", *command],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its provider plugins in its process group, ended with it
        )
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            stderr += f"\nError: terraform {command[0]} took more than {COMMAND_TIMEOUT_S} s and was killed\n"
        log.write_text(stdout + stderr)
        return {
            "root": self.name,
            "action": label,
            "ok": process.returncode in ok,
            "exit_code": process.returncode,
            "seconds": round(time.monotonic() - started, 1),
            "errors": errors(stdout + stderr),
            "log": str(log),
            "stdout": stdout,
        }

    def init(self) -> dict:
        return self.run("init", "init", "-backend=false", "-input=false", "-no-color")

    def plan(self, label: str, out: str, *extra: str) -> dict:
        common = ("-input=false", "-no-color", "-lock=false", self.parallelism)
        return self.run(label, "plan", *common, f"-out={out}", *extra, *self.args, ok=(0, 2))

    def apply(self, plan: str) -> dict:
        common = ("-input=false", "-no-color", "-lock=false", self.parallelism, "-auto-approve")
        return self.run("apply", "apply", *common, plan)

    def forget(self, addresses: list[str]) -> dict:
        return self.run("forget", "state", "rm", "-lock=false", *addresses)

    def destroy(self) -> dict:
        common = ("-input=false", "-no-color", "-lock=false", self.parallelism, "-auto-approve")
        return self.run("destroy", "destroy", *common, *self.args)

    def show(self, *plan: str) -> dict:
        step = self.run("show" + ("-plan" if plan else ""), "show", "-json", "-no-color", *plan)
        if not step["ok"]:
            raise RuntimeError(f"terraform show failed in {self.work}: {step['errors']}")
        return json.loads(step["stdout"])


def errors(output: str) -> list[dict]:
    """Terraform's errors, each with the resource address it names (``with ADDRESS,``), if any."""
    found = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        text = line.lstrip("│ ").rstrip()
        if not text.startswith("Error: "):
            continue
        address = None
        for following in lines[i + 1 : i + 12]:
            following = following.lstrip("│ ").strip()
            if following.startswith("with ") and following.endswith(","):
                address = following[5:-1]
                break
        found.append({"address": address, "error": text[7:]})
    return found


def planned(plan: dict) -> dict[str, list[str]]:
    """Managed resources a saved plan changes: address -> actions (data sources and no-ops left out)."""
    return {
        change["address"]: change["change"]["actions"]
        for change in plan.get("resource_changes", [])
        if change["mode"] == "managed" and change["change"]["actions"] != ["no-op"]
    }


def state_resources(state: dict) -> dict[str, dict]:
    """Managed resources in a `terraform show -json` state, every module's: address -> values."""
    found = {}
    modules = [state.get("values", {}).get("root_module", {})]
    while modules:
        module = modules.pop()
        for resource in module.get("resources", []):
            if resource["mode"] == "managed":
                found[resource["address"]] = {"type": resource["type"], **resource.get("values", {})}
        modules += module.get("child_modules", [])
    return found


# Resources whose id is unique only within their parent: (parent attribute, own attribute).
SCOPED_IDS = {"aws_lambda_permission": ("function_name", "statement_id")}
# Resources whose "arn" is another resource's (an event target's is its target's): named by their id.
ARN_IS_ANOTHERS = ("aws_cloudwatch_event_target",)


def shared(identities_by_root: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """What two root modules both name in the account: identity -> "root: address" of each."""
    owners: dict[str, list[str]] = {}
    for root, found in identities_by_root.items():
        for address, identity in found.items():
            owners.setdefault(identity, []).append(f"{root}: {address}")
    return {
        identity: addresses
        for identity, addresses in owners.items()
        if len({address.split(": ", 1)[0] for address in addresses}) > 1
    }


def identities(resources: dict[str, dict]) -> dict[str, str]:
    """What names each resource in the account: its ARN, else its id (parent-scoped ids with the parent)."""
    found = {}
    for address, values in resources.items():
        if values["type"] in SCOPED_IDS:
            parent, own = SCOPED_IDS[values["type"]]
            identity = f"{values['type']}:{values.get(parent)}/{values.get(own)}"
        elif values["type"] in ARN_IS_ANOTHERS or not values.get("arn"):
            identity = f"{values['type']}:{values.get('id')}"
        else:
            identity = values["arn"]
        found[address] = identity
    return found


# --- moto -------------------------------------------------------------------------------------------------------

# The stage's key resources, looked up in moto by what its state says: type -> (attribute, lookup).
KEY_RESOURCES = {
    "aws_lambda_function": ("function_name", lambda c, v: c("lambda").get_function(FunctionName=v)),
    "aws_sqs_queue": ("url", lambda c, v: c("sqs").get_queue_attributes(QueueUrl=v)),
    "aws_rds_cluster": (
        "cluster_identifier",
        lambda c, v: c("rds").describe_db_clusters(DBClusterIdentifier=v)["DBClusters"][0],
    ),
    "aws_cognito_user_pool": ("id", lambda c, v: c("cognito-idp").describe_user_pool(UserPoolId=v)),
    "aws_api_gateway_rest_api": ("id", lambda c, v: c("apigateway").get_rest_api(restApiId=v)),
}


def key_resources(resources: dict[str, dict]) -> dict[str, list[str]]:
    """type -> the identifiers of that type's resources in a state (KEY_RESOURCES)."""
    found: dict[str, list[str]] = {kind: [] for kind in KEY_RESOURCES}
    for values in resources.values():
        if values["type"] in KEY_RESOURCES:
            found[values["type"]].append(values[KEY_RESOURCES[values["type"]][0]])
    return {kind: sorted(ids) for kind, ids in found.items()}


def look_up(endpoint: str, keys: dict[str, list[str]]) -> dict[str, dict[str, bool]]:
    """type -> identifier -> whether moto has it."""
    import boto3
    from botocore.exceptions import ClientError

    clients: dict = {}

    def client(service):
        if service not in clients:
            credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
            clients[service] = boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", **credentials)
        return clients[service]

    found: dict[str, dict[str, bool]] = {}
    for kind, identifiers in keys.items():
        lookup = KEY_RESOURCES[kind][1]
        for identifier in identifiers:
            try:
                lookup(client, identifier)
                exists = True
            except (ClientError, IndexError):
                exists = False
            found.setdefault(kind, {})[identifier] = exists
    return found


def start_moto(report: dict) -> tuple[object, str]:
    """A moto server on a free loopback port, reporting what it could not answer: an operation it does
    not implement answers 501, which the AWS SDKs do not retry (a 500 is retried 25 times: minutes), in
    report["unimplemented"]; any other error in report["server_errors"]; a request the SDK sent again
    (amz-sdk-request: attempt=2 and on) in report["retried"].

    It answers one request at a time: moto's backends are not thread-safe (two Terraforms at once met
    500s). And a request the SDK sends again although moto answered it (a few of some 20,000 a run here:
    answered at once, yet sent again within 0.1 s, with keep-alive or without) gets the answer moto
    gave, not a second go (a second CreateRole fails: EntityAlreadyExists); those are in report["replayed"]."""
    import logging
    import threading
    from collections import OrderedDict
    from urllib.parse import parse_qs

    from moto.core.responses import BaseResponse
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    call_action = BaseResponse.call_action

    def reporting(self):
        service = type(self).__module__.split(".")[1]
        target = str(getattr(self, "headers", {}).get("X-Amz-Target", ""))
        action = getattr(self, "querystring", {}).get("Action", [target.rsplit(".", 1)[-1] or "?"])[0]
        attempt = str(getattr(self, "headers", {}).get("amz-sdk-request", ""))
        if attempt and not attempt.startswith("attempt=1;"):
            report["retried"].append(f"{service} {action} ({attempt})")
        try:
            return call_action(self)
        except NotImplementedError as exc:
            report["unimplemented"].append(f"{service}: {exc}")
            return 501, {}, str(exc)
        except Exception as exc:
            report["server_errors"].append(f"{service} {action}: {exc!r}")
            raise

    BaseResponse.call_action = reporting

    dispatch, one_at_a_time = DomainDispatcherApplication.__call__, threading.Lock()
    answers: OrderedDict[str, tuple] = OrderedDict()  # amz-sdk-invocation-id -> (status, headers, body)

    def serialised(self, environ, start_response):
        invocation = environ.get("HTTP_AMZ_SDK_INVOCATION_ID")
        attempt = environ.get("HTTP_AMZ_SDK_REQUEST", "attempt=1;")
        if invocation in answers and not attempt.startswith("attempt=1;") and answers[invocation][0][0] == "2":
            sent = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))  # read: no reset
            action = parse_qs(sent.decode("utf-8", "replace")).get("Action", [""])[0]
            target = environ.get("HTTP_X_AMZ_TARGET", "") or f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
            status, headers, body, waited, took = answers[invocation]
            report["replayed"].append(f"{action or target} ({attempt}; the first waited {waited} s, took {took} s)")
            start_response(status, headers)
            return body
        recorded: list = []

        def recording(status, headers, *exc_info):
            recorded[:] = [status, list(headers)]
            return start_response(status, headers, *exc_info)

        arrived = time.monotonic()
        with one_at_a_time:
            began = time.monotonic()
            answer = dispatch(self, environ, recording)
            try:
                body = list(answer)
            finally:
                if hasattr(answer, "close"):
                    answer.close()
        if invocation and recorded:
            timing = (round(began - arrived, 1), round(time.monotonic() - began, 1))
            answers[invocation] = (*recorded, body, *timing)
            while len(answers) > 1000:
                answers.popitem(last=False)
        return body

    DomainDispatcherApplication.__call__ = serialised

    # The AWS managed policies (AWSLambdaVPCAccessExecutionRole, ...) the roles attach: moto has them
    # only when asked to load them.
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def network() -> dict:
    """This process's network: its interfaces, and what connecting out answers."""
    interfaces = sorted(name for _index, name in socket.if_nameindex())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(3)
        code = probe.connect_ex(("192.0.2.1", 443))  # TEST-NET-1: never answers, but needs a route
    return {"interfaces": interfaces, "connect_out": errno.errorcode.get(code, str(code))}


# --- the scenario ---------------------------------------------------------------------------------------------


def run(spec: dict) -> dict:
    scratch = Path(spec["scratch"])
    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict = {"network": network(), "steps": [], "failed": None}
    report.update(unimplemented=[], server_errors=[], retried=[], replayed=[])
    server, endpoint = start_moto(report)
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))},
            **aws_env(endpoint),
            "TF_CLI_CONFIG_FILE": str(terraformrc(scratch / "terraformrc", Path(spec["mirror"]))),
            "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1",
        }
        roots = ([spec["account"]] if spec.get("account") else []) + spec["stages"]
        _scenario(spec, roots, env, endpoint, logs, report)
    except _Stop:
        pass
    finally:
        server.stop()
    report["wall_seconds"] = round(time.monotonic() - started)
    report["seconds"] = {
        f"{step['root']} {step['action']}": step["seconds"] for step in report["steps"] if "seconds" in step
    }
    return report


class _Stop(Exception):
    pass


def _step(report: dict, step: dict, stop: bool = True) -> dict:
    report["steps"].append({k: v for k, v in step.items() if k != "stdout"})
    if not step["ok"]:
        report["failed"] = report["failed"] or f"{step['root']} {step['action']}"
        if stop:
            raise _Stop
    return step


def _apply(tf: "Terraform") -> tuple[list[dict], dict | None, dict | None]:
    """Plan, apply that plan, read the state: (steps, planned changes, state resources), as far as it got."""
    steps = [tf.plan("plan", "apply.tfplan")]
    if not steps[-1]["ok"]:
        return steps, None, None
    plan = planned(tf.show("apply.tfplan"))
    steps.append(tf.apply("apply.tfplan"))
    return steps, plan, state_resources(tf.show())  # what a failed apply made, too


def _scenario(spec: dict, roots: list[dict], env: dict, endpoint: str, logs: Path, report: dict) -> None:
    stages = [root["name"] for root in spec["stages"]]
    first, others = stages[0], stages[1:]
    terraform: dict[str, Terraform] = {}
    report.update(overridden={}, planned={}, state={}, identities={}, key_resources={}, looked_up={})
    for root in roots:
        work = Path(spec["scratch"]) / "work" / root["name"]
        shutil.copytree(root["source"], work, ignore=shutil.ignore_patterns(".terraform*", "terraform.tfstate*"))
        report["overridden"][root["name"]] = write_overrides(work)
        tf = terraform[root["name"]] = Terraform(
            root["name"], work, root.get("args", []), env, logs, spec.get("parallelism", 10)
        )
        _step(report, tf.init())

    # 1. Everything applied, the account module first (then the stages, at once if asked): every
    #    planned resource is in the state.
    batches = [[root["name"]] for root in roots if root is spec.get("account")]
    batches += [stages] if spec.get("stages_in_parallel") else [[stage] for stage in stages]
    for batch in batches:
        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
            results = list(pool.map(lambda name: _apply(terraform[name]), batch))
        for name, (_steps, plan, resources) in zip(batch, results, strict=True):
            if plan is not None:
                report["planned"][name] = plan
            if resources is not None:
                report["state"][name] = sorted(resources)
                report["identities"][name] = identities(resources)
                report["key_resources"][name] = key_resources(resources)
        for steps, _plan, _resources in results:
            for step in steps:
                _step(report, step, stop=False)
        if report["failed"]:
            raise _Stop

    # 2. Every stage's key resources are in moto.
    report["looked_up"]["applied"] = {stage: look_up(endpoint, report["key_resources"][stage]) for stage in stages}

    # 3. The first stage destroyed; the others have nothing to change and still have their resources.
    report["forgotten"], report["state_after_destroy"] = {}, {}
    _destroy(terraform[first], report)
    report["plan_after_destroying"] = {}
    report["plan_without_replacements"] = {}
    for stage in others:
        tf = terraform[stage]
        step = _step(report, tf.plan(f"plan-after-destroying-{first}", "check.tfplan", "-detailed-exitcode"))
        report["plan_after_destroying"][stage] = {
            "exit_code": step["exit_code"],
            "changes": planned(tf.show("check.tfplan")),
        }
        report["plan_without_replacements"][stage] = _plan_without_replacements(tf, report)
    report["looked_up"][f"after destroying {first}"] = {
        stage: look_up(endpoint, report["key_resources"][stage]) for stage in stages
    }

    # 4. The others destroyed, the account module last: nothing is left.
    for root in reversed(roots):
        if root["name"] != first:
            _destroy(terraform[root["name"]], report)
    report["looked_up"]["after destroying all"] = {
        stage: look_up(endpoint, report["key_resources"][stage]) for stage in stages
    }


def _destroy(tf: Terraform, report: dict) -> None:
    """Destroys a root module, after forgetting what moto cannot delete (FORGET_BEFORE_DESTROY)."""
    resources = state_resources(tf.show())
    forget = sorted(a for a, values in resources.items() if values["type"] in FORGET_BEFORE_DESTROY)
    report["forgotten"][tf.name] = forget
    if forget:
        _step(report, tf.forget(forget))
    _step(report, tf.destroy())
    report["state_after_destroy"][tf.name] = sorted(state_resources(tf.show()))


def _plan_without_replacements(tf: Terraform, report: dict) -> dict:
    """The real configuration (no REPLACE_FILE; drift still ignored) planned against what the working copy
    made: address -> actions."""
    replacing = [directory / REPLACE_FILE for directory in modules(tf.work) if (directory / REPLACE_FILE).exists()]
    for path in replacing:
        path.rename(path.with_name(f"{path.name}.aside"))
    try:
        step = tf.plan("plan-without-replacements", "real.tfplan", "-detailed-exitcode")
        changes = planned(tf.show("real.tfplan")) if step["ok"] else {}
    finally:
        for path in replacing:
            path.with_name(f"{path.name}.aside").rename(path)
    _step(report, step)
    return {"exit_code": step["exit_code"], "changes": changes}


# --- running it isolated --------------------------------------------------------------------------------------


def isolation_missing() -> str | None:
    """Why run_isolated cannot run here, or None."""
    for tool in ("unshare", "ip", "terraform"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"cannot make a network namespace here (unshare -n needs root): {probe.stderr.strip()}"
    return None


def run_isolated(spec: dict, timeout_s: int = 1800) -> dict:
    """run(spec) in a child process in a new network namespace with only the loopback interface up."""
    scratch = Path(spec["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    spec_path, report_path = scratch / "spec.json", scratch / "report.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    command = f'ip link set lo up && exec "$0" -m devtools.stack_apply "{spec_path}" "{report_path}"'
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", command, sys.executable],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    (scratch / "child.log").write_text(result.stdout + result.stderr)  # moto's own complaints, if any
    if result.returncode != 0 or not report_path.exists():
        raise RuntimeError(f"stack_apply exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return json.loads(report_path.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, report_path = Path(argv[0]), Path(argv[1])
    report = run(json.loads(spec_path.read_text()))
    report_path.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
