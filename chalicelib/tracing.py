"""X-Ray subsegments around database, payment and AWS calls, only when tracing is on.

Lambda with active tracing sets ``_X_AMZN_TRACE_ID`` (and the stage sets
``TRACING=true``); then aws_xray_sdk is imported on first use and boto3 is
patched once. Everywhere else (local, tests) ``subsegment`` is a no-op that
imports nothing, costs one attribute lookup and logs no warnings.
"""

import os
from contextlib import contextmanager

_recorder = None


def enabled() -> bool:
    return os.environ.get("TRACING", "").lower() == "true" and "_X_AMZN_TRACE_ID" in os.environ


def _xray():
    global _recorder
    if _recorder is None:
        from aws_xray_sdk.core import patch, xray_recorder

        xray_recorder.configure(context_missing="IGNORE_ERROR", plugins=())
        patch(["boto3", "botocore"])
        _recorder = xray_recorder
    return _recorder


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
