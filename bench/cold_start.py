"""Cold start: importing app as Lambda would, from the deployment package, with and without bytecode.

    .venv/bin/python -m bench.cold_start [--runs 7]

Builds the package (devtools.package: chalice package + slimming + bytecode),
extracts it twice (as shipped, and with every __pycache__ removed, which is what
Lambda sees for a package without bytecode: it compiles every module on import),
and times a fresh interpreter doing ``import app`` from each, against a bare
``import boto3`` in the same run. boto3 and botocore come from this environment,
as they come from the runtime in Lambda. Prints medians and ratios; asserts nothing.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from devtools import package


def _time(code: str, path: Path | None, runs: int) -> float:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    env.pop("PYTHONPATH", None)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=path or tempfile.gettempdir(), check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "build"
        result = package.package("dev", out)
        shipped, bare = Path(tmp) / "shipped", Path(tmp) / "no-bytecode"
        with zipfile.ZipFile(out / "deployment.zip") as archive:
            archive.extractall(shipped)
            archive.extractall(bare)
        for cache in bare.rglob("__pycache__"):
            shutil.rmtree(cache)
        interpreter = _time("pass", None, args.runs)
        boto3 = _time("import boto3", None, args.runs) - interpreter
        cold = _time("import app", bare, args.runs) - interpreter
        warm = _time("import app", shipped, args.runs) - interpreter
    print(
        f"deployment.zip: {result['zip_bytes'] / 1e6:.2f} MB (chalice built {result['zip_bytes_before'] / 1e6:.2f} MB)"
    )
    print(f"import app, no bytecode (as Lambda compiles it): {cold * 1000:.0f} ms ({cold / boto3:.2f}x import boto3)")
    print(f"import app, shipped bytecode:                    {warm * 1000:.0f} ms ({warm / boto3:.2f}x import boto3)")
    print(f"import boto3 (reference):                        {boto3 * 1000:.0f} ms")
    print(f"(interpreter start-up, subtracted from each: {interpreter * 1000:.0f} ms; median of {args.runs} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
