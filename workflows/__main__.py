"""``python -m workflows render --out DIR``: write the Argo WorkflowTemplates as YAML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflows.catalog import render_all


def main(argv: list[str] | None = None) -> int:
    """Parse ``render --out DIR`` and write one YAML file per workflow."""
    parser = argparse.ArgumentParser(prog="python -m workflows")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write the WorkflowTemplate YAML files")
    render.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    for path in render_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
