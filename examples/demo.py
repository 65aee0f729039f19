"""The whole story on the embedded default: from ``git push`` to a promoted canary, and back.

In order, on this machine only (a loopback registry the demo starts, pods under
bubblewrap, nginx and Prometheus on 127.0.0.1), as a team would do it:

1. ``pipeline init`` a model repository; ``pipeline hooks install`` on its bare repository.
2. ``git push`` v1: the ``release`` workflow runs (seal, sign, build, SBOM, scan,
   provenance, push, attest, verify, policy check), records the release in the GitOps
   repository and promotes it to ``dev`` on pods running from the pushed image.
3. ``git push`` v2 (retrained weights): dev's canary, 50 % then 100 %, analysed, promoted.
4. ``git push`` v3 (a regression: errors on real requests): the canary analysis fails,
   the promotion rolls back, recorded in git.
5. The ``rollback`` workflow (``pipeline rollback``): dev back to v1, as a commit.
6. The admission webhook admits dev's rendered manifests and denies a pod with an
   unsigned image and a privileged pod; the runtime refuses a tampered sealed model.
7. A summary, and the evidence report (``pipeline report --html``).

Run with ``make demo`` (which sets everything up first) or
``.venv/bin/python -m examples.demo [--out DIR] [--keep DIR]``. Exits non-zero when
any outcome is not the expected one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "demo"


def _run(argv: list[str]) -> None:
    """Run one CLI command in-process, echoing it; stop the demo if it fails."""
    from pipeline.cli import run

    print(f"$ pipeline {' '.join(argv)}", flush=True)
    code = run(argv)
    if code != 0:
        raise SystemExit(f"demo: 'pipeline {' '.join(argv)}' failed with exit code {code}")


def _say(message: str) -> None:
    print(message, flush=True)


class Phases:
    """Wall time per phase, in the order they ran (the benchmark reads them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, title: str) -> Iterator[None]:
        _say(f"\n== {title}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"demo: unexpected outcome: {what}")


def _short(ref: str) -> str:
    """``host/repo@sha256:abcdef012345`` (12 hex digits): readable, still unambiguous here."""
    name, _, digest = ref.partition("@")
    return f"{name}@{digest[:19]}" if digest else ref


def _stages(state: Any) -> str:
    return " -> ".join(f"{w}%" for w in state.stages) if state.stages else "100%"


def story(work: Path, out: Path) -> dict[str, Any]:
    """Every phase; returns what the summary prints and the benchmark reads."""
    from examples import demo_checks as checks
    from examples import demo_story as s
    from pipeline.oci.local_registry import start_local_registry

    phases = Phases()
    result: dict[str, Any] = {"phases": phases.seconds}
    with start_local_registry(work / "registry") as registry:
        with phases.phase("scaffold", "1. scaffold a model repository, install the hook"):
            st = s.scaffold(_run, work, registry.host)
        versions = (("v1", "v1: first model", None),
                    ("v2", "v2: retrained weights (a good change)", s.retrain),
                    ("v3", "v3: new feature scaling (a regression)", s.regress))
        for number, (version, message, change) in enumerate(versions, start=2):
            with phases.phase(f"push-{version}", f"{number}. git push {version}"):
                if change is not None:
                    change(st.project)
                pushed = s.push(st, version, message, _say)
                current, _ = s.state(st)
            run = pushed.run
            _say(f"run {run['id']}: {run['state']}"
                 + (f" ({run['reason']})" if run.get("reason") else "")
                 + f"; dev: {current.status} {current.release.label}")
            expected = "failed" if version == "v3" else "succeeded"
            _expect(run["state"] == expected, f"{version}'s run is {run['state']}, "
                                              f"expected {expected}: see {run['log']}")
            result[version] = {"run": run, "state": current, "steps": pushed.steps,
                               "wall_s": pushed.wall_s, "record": pushed.record}
        v1, v2, v3 = (result[v]["state"] for v in ("v1", "v2", "v3"))
        _expect(v1.status == "promoted" and v2.status == "promoted", "v1 and v2 promoted")
        _expect(v3.status == "rolled-back" and v3.stable is not None
                and v3.stable.model == v2.model, "v3 rolled back to v2, in git")
        with phases.phase("rollback", "5. pipeline rollback: dev back to v1"):
            s.rollback(st, _run, v1.model)
            back, history = s.state(st)
        _expect(back.model == v1.model and back.image == v1.image, "dev back to v1")
        # history is newest first: the roll-back is the last commit.
        result["rollback"] = {"state": back, "commit": history[0].sha if history else "",
                              "commits": len(history)}
        result["analysis"] = {v: s.analysis_summaries(history, result[v]["state"].model)
                              for v in ("v1", "v2")}
        with phases.phase("admission", "6. admission webhook and runtime guards"):
            result["admission"] = _admission(checks, st, back)
            release_key = st.secrets / "signing" / "release.pub"
            result["tampered"] = checks.tampered_model_refused(
                work, v1.model, release_key, st.secrets / "kek" / "keyring.json")
        _expect(all(d["allowed"] for d in result["admission"]["rendered"]),
                "dev's rendered manifests admitted")
        _expect(not result["admission"]["unsigned"]["allowed"], "unsigned image denied")
        _expect(not result["admission"]["privileged"]["allowed"], "privileged pod denied")
        _expect(result["tampered"]["exit_code"] not in (0, None), "tampered model refused")
        with phases.phase("report", "7. the evidence report"):
            out.mkdir(parents=True, exist_ok=True)
            report = out / "report.html"
            _run(["report", "--gitops", str(st.gitops), "--env", "dev", "--html",
                  str(report)])
        result["report"] = report
        result["registry"] = registry.host
        result["history"] = [{"commit": c.sha, "message": c.message} for c in history]
    return result


def _admission(checks: Any, st: Any, current: Any) -> dict[str, Any]:
    """Ask the webhook about dev's rendered workloads, an unsigned and a privileged pod."""
    from pipeline.cli import run

    release_key = st.secrets / "signing" / "release.pub"
    values = checks.dev_values(st.project, release_key)
    workloads = checks.rendered_workloads(st.project / "helm" / "secure-runtime", values,
                                          current.image, current.model, "fraud-model-dev")
    # The same image content pushed to another repository of the project and never
    # signed there: the image policy's signature requirement refuses it.
    image_layout = next(iter(sorted(st.bare.glob("pipeline-runs/runs/*/workspace/image"))))
    unsigned_tag = f"{st.registry}/fraud-model/unsigned:demo"
    print(f"$ pipeline push {image_layout} {unsigned_tag} --insecure   # never signed")
    digest_file = st.work / "unsigned.digest"
    with open(digest_file, "w", encoding="utf-8") as sink, _stdout(sink):
        code = run(["push", str(image_layout), unsigned_tag, "--insecure"])
    if code != 0:
        raise SystemExit(f"demo: pushing the unsigned image failed ({code})")
    unsigned = f"{st.registry}/fraud-model/unsigned@{digest_file.read_text().strip()}"
    with checks.webhook(st.work, st.project / "policies" / "image-policy.yaml",
                        release_key) as client:
        rendered = [checks.decide(client, w) for w in workloads]
        template = workloads[0]
        denied_unsigned = checks.decide(client, checks.pod_of(template, "unsigned",
                                                              image=unsigned))
        denied_privileged = checks.decide(client, checks.pod_of(template, "privileged",
                                                                privileged=True))
    for d in (*rendered, denied_unsigned, denied_privileged):
        verdict = "admitted" if d["allowed"] else "denied"
        _say(f"  {d['kind']} {d['name']}: {verdict}"
             + (f": {_first_reason(d['message'])}" if d["message"] else ""))
    return {"rendered": rendered, "unsigned": denied_unsigned,
            "privileged": denied_privileged, "unsigned_image": unsigned}


@contextmanager
def _stdout(sink: Any) -> Iterator[None]:
    """The CLI prints the pushed digest on stdout: capture it into ``sink``."""
    saved = sys.stdout
    sys.stdout = sink
    try:
        yield
    finally:
        sys.stdout = saved


def _first_reason(message: str, limit: int = 160) -> str:
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _timings(result: dict[str, Any]) -> dict[str, Any]:
    """What bench/bench_demo.py reads: phase walls and every release run's steps."""
    runs = {}
    for version in ("v1", "v2", "v3"):
        record = result[version]["record"]
        runs[version] = {"started": record.get("started"), "finished": record.get("finished"),
                         "duration_s": record.get("duration_s"),
                         "steps": [{k: s.get(k) for k in ("name", "status", "started",
                                                          "finished", "duration_s")}
                                   for s in record.get("steps", [])]}
    return {"phases": result["phases"], "runs": runs}


def summary(result: dict[str, Any], total_s: float) -> str:
    """The readable summary: numbers formatted, references shortened, no reprs."""
    lines = ["", "summary"]
    for version in ("v1", "v2", "v3"):
        item = result[version]
        state, steps = item["state"], item["steps"]
        promote = steps.get("promote", {})
        release_s = sum(0.0 if s.get("duration_s") is None else float(s["duration_s"])
                        for n, s in steps.items() if n != "promote")
        head = (f"  {version}: run {item['run']['id']} {item['run']['state']} in "
                f"{item['wall_s']:.1f} s (release steps {release_s:.1f} s summed, "
                f"promote {float(promote.get('duration_s') or 0):.1f} s)")
        lines.append(head)
        if version == "v3":
            lines.append(f"    canary {_short(state.failed.model if state.failed else '')} "
                         f"rolled back to {_short(state.stable.model if state.stable else '')}")
            lines += [f"    reason: {r}" for r in state.reasons[:2]]
        else:
            how = (f"canary {_stages(state)}" if len(state.stages) > 1 else
                   "first release: straight to 100% (Argo Rollouts' first deploy)")
            lines.append(f"    promoted to dev, {how}")
            lines.append(f"    image {_short(state.image)}")
            lines.append(f"    model {_short(state.model)}")
            measured = result["analysis"].get(version) or []
            if measured:
                lines.append(f"    analysis at {state.stages[0]}%: " + "; ".join(measured))
    back = result["rollback"]
    lines.append(f"  rollback: dev runs v1 again, commit {back['commit'][:12]} "
                 f"({back['commits']} commits in dev's history)")
    adm = result["admission"]
    admitted = sum(1 for d in adm["rendered"] if d["allowed"])
    lines.append(f"  admission: {admitted} of {len(adm['rendered'])} rendered workloads "
                 f"admitted; unsigned-image pod denied, privileged pod denied")
    tampered = result["tampered"]
    lines.append(f"  tampered sealed model ({tampered['file']}, 1 byte flipped): runtime "
                 f"refused it, exit {tampered['exit_code']}")
    if tampered["reason"]:
        lines.append(f"    {_first_reason(tampered['reason'])}")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result["phases"].items())
    lines.append(f"  wall time {total_s:.1f} s: {phases}")
    lines.append("  plaintext weights written by the pipeline: none (only the source "
                 "repository has them)")
    lines.append(f"report: {result['report']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="Where the report, timings.json and the pods' image cache "
                             "(state/) go (default: build/demo).")
    parser.add_argument("--keep", type=Path, help="Keep the workspace in this directory.")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="smp-demo-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    # The pods' image cache and files, kept between demos (an image unpacks once per
    # digest). They must be reachable by the pod's uid: bubblewrap resolves a bind fd's
    # path, so no directory above them may be closed to that uid (~/.cache is under
    # /root). The release steps and pods find it through the environment the push passes on.
    state = args.out / "state"
    state.mkdir(parents=True, exist_ok=True)
    os.environ["PIPELINE_DEPLOY_STATE"] = str(state.resolve())
    try:
        result = story(work, args.out)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    timings = {**_timings(result), "total_s": total}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(summary(result, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
