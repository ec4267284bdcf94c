"""boto3 clients, created on first use and cached for the life of the process.

Cold start pays for boto3 only in invocations that call AWS. AWS_ENDPOINT_URL
(honoured by boto3 itself) points every client at a local moto server.
"""

import threading

_clients: dict[str, object] = {}
_lock = threading.Lock()


def client(service: str):
    found = _clients.get(service)
    if found is None:
        with _lock:
            found = _clients.get(service)
            if found is None:
                import boto3

                found = _clients[service] = boto3.client(service)
    return found


def reset_clients() -> None:
    """Forget cached clients (tests switch between moto contexts)."""
    _clients.clear()
