"""The whole-story demo's wall time per phase, and the release DAG against running it serially.

    .venv/bin/python -m bench.bench_demo            # runs `python -m examples.demo`
    .venv/bin/python -m bench.bench_demo --timings build/demo/timings.json   # reads one

* **phases**: the demo's own wall time per phase (scaffold, each push = release +
  promotion, rollback, admission and runtime guards, report), from its timings.json.
* **release DAG**: per release run, the baseline is the sum of its steps' durations
  (what one step after the other would take: a serial runner); ours is the run's
  wall time through the local runner, which starts independent steps together. The
  critical path (the longest chain of the DAG, from workflows/release.py, weighted by the
  measured step durations) is the floor a parallel runner can reach with these step
  times; wall minus critical path is the runner's own overhead plus contention for the
  machine's cores. The ``promote`` step is reported apart: it is the promotion, not the
  release, and sits at the end of every chain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _seconds(step: dict[str, Any]) -> float:
    return float(step.get("duration_s") or 0.0)


def critical_path(steps: dict[str, dict[str, Any]], depends: dict[str, tuple[str, ...]]
                  ) -> tuple[float, list[str]]:
    """The longest chain through the DAG weighted by measured step durations."""
    best: dict[str, tuple[float, list[str]]] = {}

    def finish(name: str) -> tuple[float, list[str]]:
        if name not in best:
            before = [finish(d) for d in depends.get(name, ()) if d in steps]
            longest = max(before, default=(0.0, []), key=lambda b: b[0])
            best[name] = (longest[0] + _seconds(steps[name]), [*longest[1], name])
        return best[name]

    return max((finish(n) for n in steps), key=lambda b: b[0])


def _wall(run: dict[str, Any], steps: list[dict[str, Any]]) -> float:
    """First step start to last step end (the runner's record has both)."""
    starts = [datetime.fromisoformat(s["started"]) for s in steps if s.get("started")]
    ends = [datetime.fromisoformat(s["finished"]) for s in steps if s.get("finished")]
    if starts and ends:
        return (max(ends) - min(starts)).total_seconds()
    return float(run.get("duration_s") or 0.0)


def analyse(timings: dict[str, Any]) -> dict[str, Any]:
    from pipeline.workflow.runner import load_plan

    depends = {t.name: t.depends for t in load_plan("release").tasks}
    rows = {}
    for version, run in timings["runs"].items():
        steps = {s["name"]: s for s in run["steps"] if s.get("status") == "succeeded"
                 or s.get("duration_s") is not None}
        release = {n: s for n, s in steps.items() if n != "promote"}
        path_s, path = critical_path(release, depends)
        rows[version] = {
            "steps": len(release),
            "sum_s": sum(_seconds(s) for s in release.values()),
            "critical_path_s": path_s, "critical_path": path,
            "wall_s": _wall(run, list(release.values())),
            "promote_s": _seconds(steps["promote"]) if "promote" in steps else 0.0,
        }
    return {"phases": timings["phases"], "total_s": timings.get("total_s"), "runs": rows}


def _print(result: dict[str, Any]) -> None:
    print("demo phases (wall):")
    for name, seconds in result["phases"].items():
        print(f"  {name:<12} {seconds:7.1f} s")
    if result.get("total_s"):
        print(f"  {'total':<12} {result['total_s']:7.1f} s")
    print("\nrelease workflow (promote apart): serial baseline = sum of steps; ours = wall")
    print(f"  {'run':<4} {'steps':>5} {'sum':>8} {'critical':>9} {'wall':>8} "
          f"{'sum/wall':>9} {'wall-crit':>10} {'promote':>8}")
    for version, r in result["runs"].items():
        ratio = r["sum_s"] / r["wall_s"] if r["wall_s"] else float("nan")
        print(f"  {version:<4} {r['steps']:>5} {r['sum_s']:7.1f}s {r['critical_path_s']:8.1f}s "
              f"{r['wall_s']:7.1f}s {ratio:8.2f}x {r['wall_s'] - r['critical_path_s']:9.1f}s "
              f"{r['promote_s']:7.1f}s")
    first = next(iter(result["runs"].values()), None)
    if first:
        print(f"  critical path: {' -> '.join(first['critical_path'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timings", type=Path, default=None,
                        help="Read this timings.json (from `python -m examples.demo`) "
                             "instead of running the demo.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    if args.timings is not None:
        timings = json.loads(args.timings.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="bench-demo-", dir="/tmp") as tmp:
            out = Path(tmp)
            out.chmod(0o755)  # the pods' state directory is below it: open to their uid
            subprocess.run([sys.executable, "-m", "examples.demo", "--out", str(out)],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            timings = json.loads((out / "timings.json").read_text())
    result = analyse(timings)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
