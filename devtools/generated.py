"""Checked-in files a generator writes (docs/openapi.json, infra/event_routing.json): one command line
for all of them, ``python -m devtools.<generator> [--check]``; --check exits 1 when the file is stale."""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def as_json(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"


def main(path: Path, render, module: str, argv=None) -> int:
    """Write ``render()`` to ``path``, or with --check say whether the committed file is current."""
    name = path.relative_to(ROOT)
    parser = argparse.ArgumentParser(description=f"build {name}")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        if not path.exists() or path.read_text() != render():
            print(f"{name} is stale: run python -m {module}", file=sys.stderr)
            return 1
        return 0
    path.write_text(render())
    return 0
