"""atheris target: the manifest loader and the evaluator only ever raise InputError.

Manifests come from pull requests: anyone can put any bytes in them. Whatever the
text, parse_manifests must return objects or raise InputError (exit 4), and every
object it returns must be evaluated by the default policies without an exception
(violations are results, not errors).

Run by hand:  .venv/bin/python tests/fuzz/fuzz_manifests.py -runs=100000
Run by tests: tests/unit/policy/test_fuzz_manifests.py (bounded number of runs).
"""

from __future__ import annotations

import atheris

from tests.fuzz.harness import fuzz

with atheris.instrument_imports(include=["pipeline.policy"]):
    from pipeline.errors import InputError
    from pipeline.policy.check import DEFAULT_POLICY_DIR, check_objects
    from pipeline.policy.manifests import parse_manifests
    from pipeline.policy.vap import load_policies

POLICIES = load_policies(DEFAULT_POLICY_DIR)
SEED = (
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n"
    "    metadata: {labels: {app.kubernetes.io/component: inference-server}}\n"
    "    spec:\n      hostNetwork: true\n      containers:\n"
    "      - {name: a, image: 'x@sha256:00', securityContext: {runAsNonRoot: true}}\n---\n"
)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        # Mutate a valid manifest: structure survives often, so the evaluator is reached.
        text = list(SEED)
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            text[fdp.ConsumeIntInRange(0, len(text) - 1)] = chr(fdp.ConsumeIntInRange(32, 126))
        body = "".join(text) + fdp.ConsumeUnicodeNoSurrogates(64)
    else:
        body = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 512))
    try:
        manifests = parse_manifests(body, "fuzz.yaml")
    except InputError:
        return
    check_objects(manifests, POLICIES)


if __name__ == "__main__":
    fuzz(test_one_input)
