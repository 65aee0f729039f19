"""Argo Events, as far as the pipeline chart uses it: schema, the GitHub event source's
signature check, and which Sensor triggers an event fires.

No Argo Events controller can run here, so this is a model of its documented code
(argo-events v1.9.11), written to be checked against the recorded exchanges in
tests/fixtures/argo_events/ and to refuse (``NotImplementedError``) any feature it does not
model, never to approve it:

* ``event_source_response``: ``eventsources/sources/github/start.go`` ``HandleRoute`` with
  go-github's ``ValidatePayload`` (``X-Hub-Signature-256``, HMAC-SHA256 of the raw body,
  constant-time compare; ``missing signature`` / ``payload signature check failed`` as a
  400, ``success`` as a 200) and the event data it dispatches (``headers``: each header a
  list, canonical names; ``body`` with ``X-GitHub-Event``/``X-GitHub-Delivery`` added).
* ``fired_triggers``: ``sensors/dependencies/filter.go`` ``filterData`` (gjson paths, string
  values as unanchored regular expressions on the value's string form, ``bool`` through
  ParseBool; comparators ``=``/``!=``; ``and``) and each trigger's ``conditions``.
* ``schema``: the committed JSON schema of EventSource and Sensor (argo-events
  ``api/jsonschema/schema.json`` at v1.9.11), made strict: an object with ``properties``
  and no ``additionalProperties`` accepts no other key, so a misspelt field fails.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argo_events"
SCHEMA_FILE = FIXTURES / "argo-events-schema.json"
EXCHANGES_FILE = FIXTURES / "recorded-github-exchanges.json"
_DEF = "io.argoproj.events.v1alpha1."


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def schema(kind: str) -> dict[str, Any]:
    """The strict JSON schema of ``kind`` (``EventSource`` or ``Sensor``)."""
    data = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return {"$ref": f"#/definitions/{_DEF}{kind}",
            "definitions": _strict(data["definitions"])}


def exchanges() -> dict[str, Any]:
    return json.loads(EXCHANGES_FILE.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ the event source


def _canonical(name: str) -> str:
    """Go's ``http.CanonicalHeaderKey``: ``X-GitHub-Event`` → ``X-Github-Event``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def event_source_response(event_source: Mapping[str, Any], secrets: Mapping[tuple[str, str], str],
                          request: Mapping[str, Any]) -> tuple[int, str, dict[str, Any] | None]:
    """``(status, body, event data or None)`` the GitHub event source answers ``request``."""
    spec = event_source["spec"]
    if set(spec) - {"eventBusName", "service", "github"}:
        raise NotImplementedError(f"event source kinds {sorted(set(spec))}")
    [(_, source)] = spec["github"].items()
    webhook = source["webhook"]
    if request["path"] != webhook["endpoint"] or request["method"] != webhook["method"]:
        return 404, "404 page not found", None
    if not source.get("active", False):
        return 400, "endpoint is inactive", None
    body = request["body"].encode("utf-8")
    headers = {_canonical(k): v for k, v in request["headers"].items()}
    ref = source.get("webhookSecret")
    if ref:  # go-github ValidatePayload: only when a secret is configured
        secret = secrets[(ref["name"], ref["key"])].encode("utf-8")
        signature = headers.get("X-Hub-Signature-256") or headers.get("X-Hub-Signature", "")
        if not signature:
            return 400, "missing signature", None
        prefix, _, tag = signature.partition("=")
        digest = {"sha256": hashlib.sha256, "sha1": hashlib.sha1,
                  "sha512": hashlib.sha512}.get(prefix)
        if digest is None:
            return 400, f'unknown hash type prefix: "{prefix}"', None
        expected = hmac.new(secret, body, digest).hexdigest()
        if not hmac.compare_digest(expected, tag.lower()):
            return 400, "payload signature check failed", None
    payload = json.loads(body)
    payload["X-GitHub-Event"] = headers.get("X-Github-Event", "")
    payload["X-GitHub-Delivery"] = headers.get("X-Github-Delivery", "")
    return 200, "success", {"headers": {k: [v] for k, v in headers.items()}, "body": payload}


# ------------------------------------------------------------------------- the sensor


def _gjson(data: Any, path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if any(c in key for c in "*?\\#@|"):
            raise NotImplementedError(f"gjson path syntax in {path!r}")
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return False, None
    return True, data


def _as_string(value: Any) -> str:
    """gjson ``Result.String()``: strings as they are, anything else as its JSON text."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _data_filter_passes(f: Mapping[str, Any], data: Any) -> bool:
    if set(f) - {"path", "type", "value", "comparator"}:
        raise NotImplementedError(f"data filter fields {sorted(f)}")
    exists, value = _gjson(data, f["path"])
    if not exists or not f.get("value"):
        return False  # Argo: an error, the event does not pass
    comparator = f.get("comparator", "")
    if comparator not in ("", "=", "!="):
        raise NotImplementedError(f"comparator {comparator!r}")
    if f["type"] == "string":
        text = _as_string(value)
        matches = [bool(re.search(v, text)) for v in f["value"]]  # Go regexp.Match: unanchored
        return any(m != (comparator == "!=") for m in matches)
    if f["type"] == "bool":
        truth = {"1": True, "t": True, "true": True, "T": True, "TRUE": True, "True": True,
                 "0": False, "f": False, "false": False, "F": False, "FALSE": False,
                 "False": False}
        return any(truth[v] == (value is True) for v in f["value"])
    raise NotImplementedError(f"data filter type {f['type']!r}")


def dependency_passes(dependency: Mapping[str, Any], data: Any) -> bool:
    filters = dependency.get("filters") or {}
    if set(filters) - {"data"} or dependency.get("filtersLogicalOperator", "and") != "and":
        raise NotImplementedError(f"filters {sorted(filters)}")
    return all(_data_filter_passes(f, data) for f in filters.get("data", []))


def _condition(expression: str, satisfied: set[str]) -> bool:
    """A trigger's ``conditions``: dependency names with ``&&``, ``||`` and parentheses."""
    tokens = re.findall(r"\(|\)|&&|\|\||[A-Za-z0-9_-]+", expression)
    if "".join(tokens) != re.sub(r"\s+", "", expression):
        raise NotImplementedError(f"condition {expression!r}")
    position = 0

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def atom() -> bool:
        token = take()
        if token == "(":
            value = either()
            if take() != ")":
                raise NotImplementedError(f"condition {expression!r}")
            return value
        return token in satisfied

    def both() -> bool:
        value = atom()
        while position < len(tokens) and tokens[position] == "&&":
            take()
            value = atom() and value
        return value

    def either() -> bool:
        value = both()
        while position < len(tokens) and tokens[position] == "||":
            take()
            value = both() or value
        return value

    result = either()
    if position != len(tokens):
        raise NotImplementedError(f"condition {expression!r}")
    return result


def fired_triggers(sensor: Mapping[str, Any], event_source_name: str, event_name: str,
                   data: Any) -> dict[str, dict[str, Any]]:
    """Trigger name → the Workflow it submits, for one event (one round, nothing stored)."""
    spec = sensor["spec"]
    satisfied = {d["name"] for d in spec["dependencies"]
                 if d["eventSourceName"] == event_source_name and d["eventName"] == event_name
                 and dependency_passes(d, data)}
    names = [d["name"] for d in spec["dependencies"]]
    fired: dict[str, dict[str, Any]] = {}
    for trigger in spec["triggers"]:
        template = trigger["template"]
        conditions = template.get("conditions")
        ready = _condition(conditions, satisfied) if conditions else set(names) <= satisfied
        if not ready:
            continue
        action = template["argoWorkflow"]
        resource = copy.deepcopy(action["source"]["resource"])
        for parameter in action.get("parameters", []):
            src, dest = parameter["src"], parameter["dest"]
            if src["dependencyName"] not in satisfied:
                raise AssertionError(f"{template['name']} reads {src['dependencyName']}, "
                                     "which this event did not satisfy")
            found, value = _gjson(data, src["dataKey"])
            assert found, src["dataKey"]
            _set(resource, dest, _as_string(value))
        fired[template["name"]] = resource
    return fired


def _set(resource: dict[str, Any], dest: str, value: str) -> None:
    node: Any = resource
    keys = dest.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
