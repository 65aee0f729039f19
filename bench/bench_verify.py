"""Verification latency: cold (fetch + verify) vs warm (cached by digest), in one run.

    .venv/bin/python -m bench.bench_verify [--rounds 30]

Starts a loopback docker-registry, pushes a small image, signs it once and attaches
three attestations (SLSA provenance, CycloneDX, vuln). One "verification" is what the
admission webhook does per pod: verify the signature and all three attestations of a
digest-pinned reference. Cold clears the in-process caches first (every manifest, blob
and signature is fetched and checked); warm keeps them (one HEAD per attached tag
confirms nothing changed). Both reuse one registry client (keep-alive), as the webhook
does. Prints the median and p90 of each and the ratio cold/warm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.oci.reference import Reference  # noqa: E402
from pipeline.oci.transfer import push_layout  # noqa: E402
from pipeline.signing import attestation, image  # noqa: E402
from pipeline.signing.keypair import create_signing_keypair  # noqa: E402
from tests.fixtures_registry import start_registry, stop_registry, write_image  # noqa: E402

PREDICATES = {
    "slsaprovenance": {"buildDefinition": {"buildType": "https://example/build/v1"}},
    "cyclonedx": {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []},
    "vuln": {"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.59.0", "result": {}}},
}


def _keys(directory: Path) -> tuple[Path, Path]:
    private, public = directory / "k.pem", directory / "k.pub"
    create_signing_keypair(private, public)
    return private, public


def _verify_all(ref: str, public: Path, client: object) -> None:
    image.verify_image(ref, [public], client=client)
    for kind in PREDICATES:
        attestation.verify_attestations(ref, kind, [public], client=client)


def _measure(rounds: int, ref: str, public: Path, client: object, cold: bool) -> list[float]:
    samples = []
    _verify_all(ref, public, client)  # connection and cache warm-up, not measured
    for _ in range(rounds):
        if cold:
            image.clear_cache()
            attestation.clear_cache()
        start = time.perf_counter()
        _verify_all(ref, public, client)
        samples.append(time.perf_counter() - start)
    return samples


def _summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        work = Path(tmp)
        server = start_registry(work / "registry")
        try:
            layout, _ = write_image(work / "image")
            ref = Reference.parse(f"{server.host}/bench/app:v1")
            private, public = _keys(work)
            with server.client() as client:
                digest = push_layout(layout, ref, client, tag="v1")
                image.sign_image(ref, private, client=client)
                for kind, predicate in PREDICATES.items():
                    attestation.attest(ref, kind, predicate, private, client=client)
                pinned = f"{ref.name}@{digest}"
                cold = _measure(args.rounds, pinned, public, client, cold=True)
                warm = _measure(args.rounds, pinned, public, client, cold=False)
        finally:
            stop_registry(server)
    cold_median, cold_p90 = _summary(cold)
    warm_median, warm_p90 = _summary(warm)
    print(f"image with 1 signature + 3 attestations, {args.rounds} rounds, loopback registry")
    for label, median, p90 in (("cold (fetch + verify)  ", cold_median, cold_p90),
                               ("warm (cached by digest)", warm_median, warm_p90)):
        print(f"{label} median {median * 1000:8.2f} ms   p90 {p90 * 1000:8.2f} ms")
    print(f"ratio cold/warm (median) {cold_median / warm_median:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
