"""Bootstrap a stage's platform operator: its tenant and first ADMIN (invited by email). Safe to repeat.

    # the local stage of a running `make run`
    .venv/bin/python -m devtools.bootstrap --name "Platform" --email ops@example.com
    # a deployed stage, with your AWS credentials: its bootstrap_operator function does the work inside the VPC
    .venv/bin/python -m devtools.bootstrap --name "Platform" --email ops@example.com \
        --function billing-platform-prod-bootstrap_operator

Prints ``{"tenant_id", "created", "admin": {"email", "status"}}``; ``created`` is false on every run
after the first, which finds the operator and its admin and changes nothing.
"""

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the operator's tenant name")
    parser.add_argument("--email", required=True, help="its first ADMIN, who receives the invitation")
    parser.add_argument("--function", help="a deployed stage's bootstrap_operator function (default: local)")
    args = parser.parse_args(argv)
    if args.function:
        import boto3

        answer = boto3.client("lambda").invoke(
            FunctionName=args.function, Payload=json.dumps({"name": args.name, "email": args.email}).encode()
        )
        result = json.loads(answer["Payload"].read())
        print(json.dumps(result, indent=2))
        return 1 if answer.get("FunctionError") else 0
    from devtools.local_aws import attach

    attach()
    from chalicelib import onboarding

    print(json.dumps(onboarding.bootstrap_operator(args.name, args.email), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
