"""X-Ray subsegments around database, payment and AWS calls, only when tracing is on.

Lambda with active tracing sets ``_X_AMZN_TRACE_ID`` (and the stage sets
``TRACING=true``); then aws_xray_sdk is imported on first use, and botocore is
patched (every AWS call a subsegment) as soon as boto3 is imported: at once if it
already is, else when the first boto3 client is made. An invocation that calls no
AWS service (a GET, say) never imports boto3 for tracing's sake (~60 ms of a
cold start). Everywhere else (local, tests) ``subsegment`` is a no-op that
imports nothing, costs one attribute lookup and logs no warnings.
"""

import os
import threading
from contextlib import contextmanager

_recorder = None
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("TRACING", "").lower() == "true" and "_X_AMZN_TRACE_ID" in os.environ


def _patch_botocore(_module) -> None:
    from aws_xray_sdk.core import patch

    patch(["botocore"])  # what patching boto3 does too; once per process


def _xray():
    global _recorder
    if _recorder is None:
        with _lock:
            if _recorder is None:
                import wrapt  # aws_xray_sdk's own dependency
                from aws_xray_sdk.core import xray_recorder

                xray_recorder.configure(context_missing="IGNORE_ERROR", plugins=())
                # Once boto3 is imported (now, if it is): by then botocore.client is whole, which the patch
                # needs (a hook on botocore.client itself runs before the package binds it).
                wrapt.register_post_import_hook(_patch_botocore, "boto3")
                _recorder = xray_recorder
    return _recorder


def start() -> None:
    """Tracing on: configure X-Ray now (``aws.client`` calls it before making a client, so that the first
    AWS call of an invocation is traced even when no subsegment came before it)."""
    if enabled():
        _xray()


@contextmanager
def subsegment(name: str, **annotations):
    if not enabled():
        yield None
        return
    with _xray().in_subsegment(name) as segment:
        if segment is not None:
            for key, value in annotations.items():
                segment.put_annotation(key, str(value))
        yield segment
