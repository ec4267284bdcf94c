"""Print a real Cognito ID token from the local pool of a running `make run`.

    TOKEN=$(.venv/bin/python -m devtools.token --group ADMIN)
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/v1/plans

Defaults to the seeded demo tenant. Each call signs in a new user of that tenant.
"""

import argparse
import os
import sys

from devtools.seed import DEMO_TENANT_ID


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default=DEMO_TENANT_ID, help="custom:tenant_id claim (default: demo tenant)")
    parser.add_argument("--group", action="append", choices=["ADMIN", "USER"], help="repeatable; default USER")
    args = parser.parse_args(argv)
    from devtools.local_aws import isolate, load_state

    isolate()
    state = load_state()
    os.environ["AWS_ENDPOINT_URL"] = state["endpoint"]
    from devtools.cognito import LocalPool

    pool = LocalPool(pool_id=state["cognito_user_pool_id"])
    print(pool.token(args.tenant, *(args.group or ["USER"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
