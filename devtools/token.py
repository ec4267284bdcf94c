"""Print a real Cognito access token from the local pool of a running `make run`.

    TOKEN=$(.venv/bin/python -m devtools.token --group ADMIN)
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/v1/plans

A person (default): signs in a new user of the tenant (default: the seeded demo tenant) in the
given groups. A machine client (``--client-id`` and ``--client-secret``, from POST /v1/api_clients):
the client-credentials grant, as the pool's /oauth2/token answers it. Either way the app's own
pre-token trigger shapes the token, as Cognito runs it when deployed.
"""

import argparse
import sys

from devtools.seed import DEMO_TENANT_ID


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default=DEMO_TENANT_ID, help="custom:tenant_id of a person (default: demo tenant)")
    parser.add_argument("--group", action="append", choices=["ADMIN", "USER"], help="repeatable; default USER")
    parser.add_argument("--client-id", help="a machine client's id: the client-credentials grant")
    parser.add_argument("--client-secret", help="its secret (shown once by POST /v1/api_clients)")
    parser.add_argument("--scope", action="append", help="repeatable; default every scope the client has")
    args = parser.parse_args(argv)
    from devtools.local_aws import attach

    state = attach()
    from devtools.cognito import LocalPool

    pool = LocalPool(pool_id=state["cognito_user_pool_id"])
    if args.client_id:
        print(pool.machine_token(args.client_id, args.client_secret or "", args.scope))
    else:
        print(pool.token(args.tenant, *(args.group or ["USER"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
