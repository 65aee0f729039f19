"""The main job, end to end, on the embedded default: no cluster, no external registry.

For each example model project (``examples/tiny`` and, when its weights are
present, ``examples/minilm``): create a key-encryption key and a signing key pair
in a throwaway workspace, seal the model, sign it, verify everything, load the
weights in memory (never on disk), build the module from the verified code, run
one inference. Then the release (examples/demo_release.py): the Hera ``release``
workflow through the local runner (seal, daemonless slim image, SBOM, scan, SLSA
provenance, push to a loopback registry, sign, attest, verify, policy check of the
rendered chart), then serve the model pulled by digest and ask it for one inference. Prints a short
summary; exits non-zero on any failure.

Run with ``make demo`` (which sets everything up first) or
``.venv/bin/python -m examples.demo [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent


def _run(argv: list[str]) -> None:
    """Run one CLI command in-process, echoing it; stop the demo if it fails."""
    from pipeline.cli import run

    print(f"$ pipeline {' '.join(argv)}", flush=True)
    code = run(argv)
    if code != 0:
        raise SystemExit(f"demo: 'pipeline {' '.join(argv)}' failed with exit code {code}")


def _infer(project: str, module, model) -> str:  # type: ignore[no-untyped-def]
    import torch

    if project == "minilm":
        sentences = ["A man is playing a guitar.", "Someone plays an instrument.",
                     "The stock market fell sharply today."]
        code_inputs = module_code(model).preprocess(sentences, model.files)
        with torch.inference_mode():
            emb = module(**code_inputs)
        similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
        return (f"embeddings {tuple(emb.shape)}, cosine(similar)={similar:.3f} "
                f"> cosine(unrelated)={unrelated:.3f}")
    torch.manual_seed(0)
    batch = torch.randn(2, 16)
    with torch.inference_mode():
        out = module(batch)
    return f"class probabilities {tuple(out.shape)}, argmax={out.argmax(dim=1).tolist()}"


def module_code(model):  # type: ignore[no-untyped-def]
    from secure_runtime.loader import load_project_code

    return load_project_code(model)


def demo_project(project: str, work: Path, private: Path, public: Path) -> dict[str, object]:
    from pipeline.signing import Trust
    from secure_runtime.loader import build_module, load_sealed_model

    sealed = work / f"{project}.sealed"
    _run(["model", "seal", str(EXAMPLES / project), "--key", "demo-kek", "--out", str(sealed),
          "--sign-key", str(private)])
    _run(["model", "verify", str(sealed), "--trust", str(public)])
    _run(["model", "unseal", str(sealed), "--verify-only", "--trust", str(public)])
    started = time.perf_counter()
    model = load_sealed_model(sealed, trust=Trust(public_keys=(public,)), device="auto")
    module = build_module(model)
    load_seconds = time.perf_counter() - started
    result = _infer(project, module, model)
    params = sum(t.numel() for t in model.tensors.values())
    return {
        "model": model.name,
        "parameters": params,
        "device": model.device,
        "load_s": load_seconds,
        "split": {k: round(v * 1000, 1) for k, v in model.timings.items()},
        "inference": result,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="Keep the workspace in this directory.")
    parser.add_argument("--only", choices=["tiny", "minilm"], help="Run one example only.")
    parser.add_argument("--no-release", action="store_true",
                        help="Stop after sealing and loading (skip image, registry, serving).")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="smp-demo-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    os.environ["PIPELINE_KEYRING"] = str(work / "keyring" / "keyring.json")
    try:
        _run(["keys", "create", "demo-kek"])
        _run(["keys", "create-signing", "demo-signer", "--dir", str(work)])
        private, public = work / "demo-signer.key", work / "demo-signer.pub"
        projects = [args.only] if args.only else ["tiny", "minilm"]
        if "minilm" in projects and not (EXAMPLES / "minilm" / "model.safetensors").exists():
            print("note: examples/minilm has no weights (run: python -m examples.prepare_minilm)")
            projects.remove("minilm")
        summaries = [demo_project(p, work, private, public) for p in projects]
        released = None
        if not args.no_release:
            from examples.demo_release import release

            print("\nrelease: the Hera release workflow through the local runner, then serving",
                  flush=True)
            released = release(_run, work, private, public, work / "keyring", "demo-kek")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\nsummary")
    for s in summaries:
        print(
            f"  {s['model']}: {s['parameters']:,} parameters on {s['device']}, "
            f"verified+decrypted+built in {s['load_s'] * 1000:.0f} ms {s['split']}\n"
            f"    inference: {s['inference']}"
        )
    if released:
        print(
            f"  release workflow: {released['steps']} steps in {released['release_s']:.1f} s:"
            f" image {released['image']}\n"
            f"    signed, 3 attestations verified, chart policy-checked and images verified"
            f" (vulnerabilities: {released['vulnerabilities']})\n"
            f"  served {released['model']} (pulled by digest, verified, decrypted in memory)\n"
            f"    OIP v2 infer -> {released['output']['name']} {released['output']['shape']}"
            f" {released['output']['data'][:4]}...; SIGTERM -> exit {released['exit_code']}"
        )
    print("  plaintext weights written by the pipeline: none (only the source repo has them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
