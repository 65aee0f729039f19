"""A release in a real registry, as the release workflow leaves it: a signed image with
an attestation, and sealed models pushed as OCI artifacts (signed, unsigned, tampered).

The promotion gates verify exactly these (image policy via the registry, the model's
signature by pulling the sealed artifact), so tests of ``pipeline promote`` can pass the
gates for real, or fail them for one precise reason.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.distribution import push_model
from pipeline.oci import RegistryOptions
from pipeline.oci.reference import Reference
from pipeline.oci.transfer import push_layout
from pipeline.signing.attestation import attest
from pipeline.signing.image import sign_image
from tests.fixtures_registry import RegistryServer, write_image

INSECURE = RegistryOptions(insecure=True, retries=1, backoff=0.01)
VULN = {"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.59.0",
                    "result": {"vulnerabilities": "not scanned (no DB)"}},
        "metadata": {"scanStartedOn": "2025-01-01T00:00:00Z"}}


@dataclass(frozen=True)
class SignedRelease:
    image: str  # signed + vuln attestation
    image_unattested: str  # signed, attestation missing
    model: str  # sealed, signed by the trusted signer
    model_unsigned: str
    model_tampered: str  # signed, then one ciphertext byte changed
    image_policy: Path
    trust: Path


def push_image(registry: RegistryServer, work: Path, repo: str, salt: str) -> str:
    layout, _ = write_image(work / f"{repo.replace('/', '-')}-{salt}", tag=salt,
                            layers=[{"app.txt": f"{repo} {salt}\n".encode()}])
    ref = Reference.parse(f"{registry.host}/{repo}:{salt}")
    with registry.client() as client:
        digest = push_layout(layout, ref, client, tag=salt)
    return f"{registry.host}/{repo}@{digest}"


def push_sealed(registry: RegistryServer, sealed: Path, repo: str, tag: str) -> str:
    ref = f"{registry.host}/{repo}:{tag}"
    digest = push_model(sealed, ref, registry_options=INSECURE)
    return f"{registry.host}/{repo}@{digest}"


def make_signed_release(registry: RegistryServer, work: Path, signed_model: Path,
                        unsigned_model: Path, private: Path, public: Path) -> SignedRelease:
    """Push and sign everything under ``rel/`` in ``registry``; write the image policy."""
    work.mkdir(parents=True, exist_ok=True)
    image = push_image(registry, work, "rel/secure-runtime", "good")
    bare = push_image(registry, work, "rel/secure-runtime", "noatt")
    for ref in (image, bare):
        sign_image(ref, private, registry_options=INSECURE)
    attest(image, "vuln", VULN, private, registry_options=INSECURE)
    tampered_dir = work / "tampered.sealed"
    shutil.copytree(signed_model, tampered_dir)
    victim = next(p for p in sorted(tampered_dir.rglob("*")) if p.is_file()
                  and p.suffix not in (".json", ".sig") and p.name != "model.sig")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    policy = work / "image-policy.yaml"
    shutil.copy(public, work / "release.pub")
    policy.write_text(
        "version: 1\ndefault: deny\nrequireDigest: true\nrules:\n"
        f"  - name: release\n    images: ['{registry.host}/rel/*']\n"
        "    authorities:\n      - key: release.pub\n"
        "    attestations:\n      - type: vuln\n")
    return SignedRelease(
        image=image, image_unattested=bare,
        model=push_sealed(registry, signed_model, "rel/models/tiny", "signed"),
        model_unsigned=push_sealed(registry, unsigned_model, "rel/models/tiny", "unsigned"),
        model_tampered=push_sealed(registry, tampered_dir, "rel/models/tiny", "tampered"),
        image_policy=policy, trust=work / "release.pub")
