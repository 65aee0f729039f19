"""Verification latency: cold (fetch + verify) vs warm (cached by digest), in one run.

    .venv/bin/python -m bench.bench_verify [--rounds 30]

Starts a loopback docker-registry, pushes a small image, signs it once and attaches
three attestations (SLSA provenance, CycloneDX, vuln). One "verification" is what the
admission webhook does per pod: verify the signature and all three attestations of a
digest-pinned reference. Cold clears the in-process caches first (every manifest, blob
and signature is fetched and checked); warm keeps them (one HEAD per attached tag
confirms nothing changed). Both reuse one registry client (keep-alive), as the webhook
does. Prints the median and p90 of each and the ratio cold/warm.

Then a digest with 20 attachments (5 signatures by 5 keys, 15 attestations), in today's
tag-only layout (cosign's ``.sig``/``.att`` tags only) and in ours (each attachment its
own manifest with a discovery tag, found by one tag listing per verify call), cold and
warm, in the same run, with the registry requests each verification sent.
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

from bench import _baseline_verify as baseline  # noqa: E402
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


class _Counting:
    """Counts the registry requests a client sends (every one goes through ``_request``)."""

    def __init__(self, client: object) -> None:
        self.count = 0
        original = client._request  # type: ignore[attr-defined]

        def request(*args: object, **kwargs: object) -> object:
            self.count += 1
            return original(*args, **kwargs)

        client._request = request  # type: ignore[attr-defined]


#: The 20-attachment digest: 5 signatures (5 keys) and 15 attestations (5 of each type).
SIGNERS = 5
PER_TYPE = 5


def _many_keys(directory: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for i in range(SIGNERS):
        private, public = directory / f"s{i}.pem", directory / f"s{i}.pub"
        create_signing_keypair(private, public)
        pairs.append((private, public))
    return pairs


def _attach_twenty(ref: str, pairs: list[tuple[Path, Path]], client: object,
                   layout: str) -> None:
    """5 signatures + 15 attestations, in our layout or today's tag-only (cosign) one."""
    ours = layout == "ours"
    for private, _ in pairs:
        image.sign_image(ref, private, client=client, attachments=ours)
    for n in range(PER_TYPE):
        for kind, predicate in PREDICATES.items():
            attestation.attest(ref, kind, {**predicate, "n": n}, pairs[0][0], client=client,
                               referrer=ours)


def _verify_twenty(ref: str, publics: list[Path], client: object, layout: str) -> None:
    if layout == "ours":
        verify_image, verify_attestations = image.verify_image, attestation.verify_attestations
    else:  # today's verifier: the cosign tags only
        verify_image, verify_attestations = (baseline.verify_image,
                                             baseline.verify_attestations)
    verify_image(ref, publics, threshold=SIGNERS, client=client)
    for kind in PREDICATES:
        statements = verify_attestations(ref, kind, publics[:1], client=client)
        assert len(statements) == PER_TYPE, (kind, len(statements))


def _measure_twenty(rounds: int, ref: str, publics: list[Path], client: object,
                    counter: _Counting, cold: bool, layout: str) -> tuple[list[float], int]:
    samples, requests = [], 0
    _verify_twenty(ref, publics, client, layout)  # warm-up, not measured
    for _ in range(rounds):
        if cold:
            image.clear_cache()
            attestation.clear_cache()
            baseline.clear_caches()
        before = counter.count
        start = time.perf_counter()
        _verify_twenty(ref, publics, client, layout)
        samples.append(time.perf_counter() - start)
        requests = counter.count - before
    return samples, requests


def _twenty(server: object, work: Path, rounds: int) -> None:
    """Today's tag-only layout against ours, 20 attachments, cold and warm, one run."""
    pairs = _many_keys(work)
    publics = [public for _, public in pairs]
    rows = []
    for n, layout in enumerate(("tag-only", "ours")):
        image_layout, _ = write_image(work / f"image20-{layout}",
                                      layers=[{"a.txt": f"twenty {layout}".encode()}])
        ref = Reference.parse(f"{server.host}/bench/twenty{n}:v1")  # type: ignore[attr-defined]
        with server.client() as client:  # type: ignore[attr-defined]
            digest = push_layout(image_layout, ref, client, tag="v1")
            pinned = f"{ref.name}@{digest}"
            _attach_twenty(pinned, pairs, client, layout)
            counter = _Counting(client)
            cold, cold_requests = _measure_twenty(rounds, pinned, publics, client, counter,
                                                  True, layout)
            warm, warm_requests = _measure_twenty(rounds, pinned, publics, client, counter,
                                                  False, layout)
        rows.append((layout, _summary(cold), cold_requests, _summary(warm), warm_requests))
    print(f"\ndigest with 20 attachments ({SIGNERS} signatures, {3 * PER_TYPE} attestations): "
          "verify the signature threshold and the 3 attestation types, "
          f"{rounds} rounds")
    print("tag-only = today's layout and verifier (bench/_baseline_verify.py); "
          "ours = attachment manifests + discovery tags")
    print("layout     cold median / p90 (requests)        warm median / p90 (requests)")
    for layout, (cm, cp), cr, (wm, wp), wr in rows:
        print(f"{layout:9}  {cm * 1000:7.2f} / {cp * 1000:7.2f} ms ({cr:3d})    "
              f"{wm * 1000:7.2f} / {wp * 1000:7.2f} ms ({wr:3d})")
    (_, (tcm, _), tcr, (twm, _), twr), (_, (ocm, _), ocr, (owm, _), owr) = rows
    print(f"ratio ours/tag-only: cold {ocm / tcm:.2f}x ({ocr - tcr:+d} requests), "
          f"warm {owm / twm:.2f}x ({owr - twr:+d} requests over 4 verify calls: one tag "
          "listing each)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--twenty-rounds", type=int, default=10,
                        help="Rounds of the 20-attachment comparison (0: skip it).")
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
            cold_median, cold_p90 = _summary(cold)
            warm_median, warm_p90 = _summary(warm)
            print(f"image with 1 signature + 3 attestations, {args.rounds} rounds, "
                  "loopback registry")
            for label, median, p90 in (("cold (fetch + verify)  ", cold_median, cold_p90),
                                       ("warm (cached by digest)", warm_median, warm_p90)):
                print(f"{label} median {median * 1000:8.2f} ms   p90 {p90 * 1000:8.2f} ms")
            print(f"ratio cold/warm (median) {cold_median / warm_median:.1f}x")
            if args.twenty_rounds:
                (work / "twenty").mkdir()
                _twenty(server, work / "twenty", args.twenty_rounds)
        finally:
            stop_registry(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
