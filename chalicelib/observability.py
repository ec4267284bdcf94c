"""Metrics as CloudWatch Embedded Metric Format lines on stdout: zero API calls.

Lambda ships stdout to CloudWatch Logs, which extracts the metrics. Each call
writes one JSON line; dimensions are a small fixed set (TenantId, PlanId).
"""

import json
import sys
import time

NAMESPACE = "BillingPlatform"


def emit_metric(name: str, value: float | int, unit: str = "Count", **dimensions: str) -> None:
    dims = {k: str(v) for k, v in dimensions.items() if v is not None}
    record = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [sorted(dims)], "Metrics": [{"Name": name, "Unit": unit}]}
            ],
        },
        name: value,
        **dims,
    }
    sys.stdout.write(json.dumps(record) + "\n")
