"""Policy evaluation throughput: compiled-once engine vs compile-per-evaluation, in one run.

    .venv/bin/python -m bench.bench_policy [--objects 2000] [--rounds 3]

Evaluates the default policy set (policies/*.yaml, every bound ValidatingAdmissionPolicy)
over N distinct compliant Deployments, which is what the PR check and the admission
webhook do. One "evaluation" is one (policy, object) pair: match, matchConditions,
variables and all validations. The engine compiles every expression once and builds one
activation per object and policy (rebuilt only when lazily computed variables are added);
the naive baseline compiles each policy's expressions again for every evaluation, as a
checker that keeps no compiled programs would. Prints evaluations per second of each
(best of --rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.policy.check import DEFAULT_POLICY_DIR, check_objects  # noqa: E402
from pipeline.policy.evaluate import evaluate  # noqa: E402
from pipeline.policy.manifests import Manifest  # noqa: E402
from pipeline.policy.vap import load_policies, parse_binding, parse_policy  # noqa: E402
from tests.support.policy_objects import workload  # noqa: E402


def _objects(n: int) -> list[Manifest]:
    out = []
    for i in range(n):
        obj = workload("Deployment")
        obj["metadata"]["name"] = f"model-{i}"
        out.append(Manifest("bench.yaml", i, obj))
    return out


def _raw_docs() -> list[tuple[dict, dict]]:
    """(policy doc, binding doc) pairs straight from policies/, uncompiled."""
    policies, bindings = {}, []
    for path in sorted(DEFAULT_POLICY_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ValidatingAdmissionPolicy":
                policies[doc["metadata"]["name"]] = doc
            elif isinstance(doc, dict) and doc.get("kind") == "ValidatingAdmissionPolicyBinding":
                bindings.append(doc)
    return [(policies[b["spec"]["policyName"]], b) for b in bindings]


def engine(objects: list[Manifest]) -> tuple[float, int]:
    policies = load_policies(DEFAULT_POLICY_DIR)
    start = time.perf_counter()
    result = check_objects(objects, policies)
    elapsed = time.perf_counter() - start
    assert result.ok, result.violations[:3]
    return elapsed, len(objects) * len(policies.bindings)


def naive(objects: list[Manifest]) -> tuple[float, int]:
    docs = _raw_docs()
    start = time.perf_counter()
    count = 0
    for manifest in objects:
        for policy_doc, binding_doc in docs:
            policy = parse_policy(policy_doc, "bench")  # compiles every expression again
            binding = parse_binding(binding_doc, "bench")
            assert not evaluate(policy, binding, manifest.obj)
            count += 1
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    objects = _objects(args.objects)
    naive_objects = objects[: max(1, args.objects // 10)]  # the baseline is slow
    best_engine = best_naive = 0.0
    for _ in range(args.rounds):
        elapsed, count = engine(objects)
        best_engine = max(best_engine, count / elapsed)
        elapsed, count = naive(naive_objects)
        best_naive = max(best_naive, count / elapsed)
    policies = len(load_policies(DEFAULT_POLICY_DIR).bindings)
    print(f"default policy set: {policies} policies; {args.objects} Deployments "
          f"(baseline: {len(naive_objects)}), best of {args.rounds}")
    print(f"engine (compiled once):        {best_engine:10.0f} evaluations/s "
          f"({1e6 / best_engine:7.1f} us each, {best_engine / policies:8.0f} objects/s)")
    print(f"naive (compile per evaluation): {best_naive:9.0f} evaluations/s "
          f"({1e6 / best_naive:7.1f} us each)")
    print(f"ratio engine/naive: {best_engine / best_naive:.1f}x")


if __name__ == "__main__":
    main()
