"""Validate a SARIF log against the official SARIF 2.1.0 schema (tests/fixtures/sarif/).

Why the official schema and not a shape check of our own: GitHub code scanning refuses
an upload that does not validate, and a hand-written check would only repeat what the
writer believes. The schema is OASIS's (source and version in tests/fixtures/sarif/SOURCE.md).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "sarif" / "sarif-schema-2.1.0.json"


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(
        schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)


def validate_sarif(log: Any) -> dict[str, Any]:
    """Raise AssertionError listing every schema violation; return the log (a dict)."""
    if isinstance(log, str):
        log = json.loads(log)
    errors = sorted(_validator().iter_errors(log), key=lambda e: list(e.absolute_path))
    if errors:
        raise AssertionError("not valid SARIF 2.1.0:\n  " + "\n  ".join(
            f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in errors))
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1
    return dict(log)


def results_by_rule(log: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The results of the log's one run, grouped by ruleId (each ruleIndex checked)."""
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    out: dict[str, list[dict[str, Any]]] = {}
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        out.setdefault(result["ruleId"], []).append(result)
    return out
