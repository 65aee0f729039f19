"""Sigstore keyless (certificate-based) image signatures, verified against a local trust root.

A keyless signature is cosign's ``.sig`` layer plus three annotations: the
short-lived Fulcio leaf certificate (``dev.sigstore.cosign/certificate``), its
chain (``dev.sigstore.cosign/chain``), and the Rekor transparency-log entry with
its signed entry timestamp (``dev.sigstore.cosign/bundle``). It is accepted when

1. the leaf chains, signature by signature, to a Fulcio CA of the trust root
   (the chain annotation only offers candidates; only the trust root is trusted),
   every certificate valid at the time the log entry was integrated;
2. the leaf is for code signing and names an identity the verifier trusts: its
   OIDC issuer extension equals the authority's issuer and one of its SANs
   (e-mail or URI) fully matches the authority's subject regular expression;
3. the leaf's key made the signature over the payload;
4. the Rekor entry is signed by a Rekor key of the trust root and binds exactly
   this signature, payload hash and certificate (so the certificate was used
   while it was valid, and the signature is public).

The trust root (Fulcio CA certificates, Rekor public keys) normally comes from
Sigstore's TUF repository; nothing on the network is reachable here, so it is
given as local files (``TrustRoot.load``) — a copy of the public-good instance's,
or a private Sigstore deployment's. ``require_tlog=False`` drops step 4 and checks
certificate validity at the current time instead (cosign's
``--insecure-ignore-tlog``); it must be asked for explicitly.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from pipeline.errors import KeyProviderError, VerificationError
from pipeline.signing._ecdsa import VerifyKey, load_verify_key

CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
#: Fulcio's OIDC issuer extensions: v1 holds raw bytes, v2 a DER UTF8String.
OID_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_MAX_CHAIN = 5


@dataclass(frozen=True)
class Identity:
    """A trusted keyless signer: OIDC issuer (exact) and subject (full-match regex)."""

    issuer: str
    subject: str

    @property
    def label(self) -> str:
        return f"keyless:{self.issuer}:{self.subject}"


@dataclass(frozen=True)
class TrustRoot:
    """Fulcio CA certificates and Rekor public keys that keyless verification trusts."""

    fulcio: tuple[x509.Certificate, ...]
    rekor: tuple[VerifyKey, ...] = ()
    require_tlog: bool = True

    @classmethod
    def load(
        cls,
        fulcio: Sequence[str | os.PathLike[str]],
        rekor: Sequence[str | os.PathLike[str]] = (),
        *,
        require_tlog: bool = True,
    ) -> TrustRoot:
        """Read PEM CA certificates (files may hold several) and PEM Rekor public keys."""
        certificates: list[x509.Certificate] = []
        for source in fulcio:
            try:
                with open(source, "rb") as handle:
                    certificates.extend(x509.load_pem_x509_certificates(handle.read()))
            except (OSError, ValueError) as exc:
                raise KeyProviderError(f"{source}: not a PEM CA certificate file ({exc})") from None
        if not certificates:
            raise KeyProviderError("a keyless trust root needs at least one Fulcio CA certificate")
        keys = tuple(load_verify_key(source) for source in rekor)
        if require_tlog and not keys:
            raise KeyProviderError(
                "keyless verification needs a Rekor public key (or require_tlog=False)"
            )
        return cls(tuple(certificates), keys, require_tlog)

    @property
    def fingerprint(self) -> str:
        """Identifies the root in cache keys."""
        parts = [c.fingerprint(hashes.SHA256()).hex() for c in self.fulcio]
        parts += [k.keyid for k in self.rekor] + [str(self.require_tlog)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _pem_certificates(text: str, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise VerificationError(f"{what} is not PEM certificates") from None


def _valid_at(cert: x509.Certificate, when: datetime.datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise VerificationError(f"{what} was not valid at {when.isoformat()}")


def _verify_chain(
    leaf: x509.Certificate,
    offered: list[x509.Certificate],
    root: TrustRoot,
    when: datetime.datetime,
) -> None:
    current = leaf
    _valid_at(leaf, when, "the signing certificate")
    for _ in range(_MAX_CHAIN):
        for anchor in root.fulcio:
            if _issued_by(current, anchor):
                _valid_at(anchor, when, "the Fulcio CA certificate")
                return
        parents = [c for c in offered if c != current and _issued_by(current, c)]
        if not parents:
            break
        current = parents[0]
        constraints = _extension(current, x509.BasicConstraints)
        if constraints is None or not constraints.ca:
            raise VerificationError("the certificate chain has a non-CA issuer")
        _valid_at(current, when, "an intermediate certificate")
    raise VerificationError("the signing certificate does not chain to a trusted Fulcio CA")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _extension(cert: x509.Certificate, kind: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _issuer_of(cert: x509.Certificate) -> str | None:
    for oid in (OID_ISSUER_V2, OID_ISSUER_V1):
        try:
            value = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        if oid == OID_ISSUER_V2 and raw[:1] == b"\x0c" and len(raw) >= 2 and raw[1] < 0x80:
            raw = raw[2 : 2 + raw[1]]  # DER UTF8String, short form length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _subjects_of(cert: x509.Certificate) -> list[str]:
    names = _extension(cert, x509.SubjectAlternativeName)
    if names is None:
        return []
    return [
        *names.get_values_for_type(x509.RFC822Name),
        *names.get_values_for_type(x509.UniformResourceIdentifier),
    ]


def _integrated_time(
    bundle_text: str | None,
    leaf: x509.Certificate,
    payload: bytes,
    signature: bytes,
    root: TrustRoot,
) -> datetime.datetime:
    """Check the Rekor entry (signature by a trusted log, binds this signature); its time."""
    if not bundle_text:
        raise VerificationError("no transparency-log entry (Rekor bundle) with the signature")
    try:
        bundle = json.loads(bundle_text)
        set_signature = base64.b64decode(bundle["SignedEntryTimestamp"], validate=True)
        entry = bundle["Payload"]
        canonical = json.dumps(
            {
                "body": entry["body"],
                "integratedTime": entry["integratedTime"],
                "logID": entry["logID"],
                "logIndex": entry["logIndex"],
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        body = json.loads(base64.b64decode(entry["body"], validate=True))
        spec = body["spec"]
        logged_hash = spec["data"]["hash"]
        logged_signature = base64.b64decode(spec["signature"]["content"], validate=True)
        logged_cert = base64.b64decode(spec["signature"]["publicKey"]["content"], validate=True)
        integrated = int(entry["integratedTime"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise VerificationError("the Rekor bundle is malformed") from None
    if not any(key.verify(set_signature, canonical) for key in root.rekor):
        raise VerificationError("the Rekor entry is not signed by a trusted transparency log")
    if body.get("kind") != "hashedrekord" or logged_hash != {
        "algorithm": "sha256",
        "value": hashlib.sha256(payload).hexdigest(),
    }:
        raise VerificationError("the Rekor entry is for another payload")
    if logged_signature != signature:
        raise VerificationError("the Rekor entry records another signature")
    try:
        logged = x509.load_pem_x509_certificate(logged_cert)
    except ValueError:
        raise VerificationError("the Rekor entry's certificate is malformed") from None
    if logged != leaf:
        raise VerificationError("the Rekor entry records another certificate")
    return datetime.datetime.fromtimestamp(integrated, datetime.UTC)


def verify_keyless(
    annotations: Mapping[str, str],
    payload: bytes,
    signature: bytes,
    root: TrustRoot,
    identities: Sequence[Identity],
) -> Identity:
    """The trusted identity that made this signature; VerificationError saying why not."""
    leaf_text = annotations.get(CERTIFICATE_ANNOTATION)
    if not leaf_text:
        raise VerificationError("no signing certificate (not a keyless signature)")
    leaf = _pem_certificates(leaf_text, "the certificate annotation")[0]
    chain_text = annotations.get(CHAIN_ANNOTATION)
    offered = _pem_certificates(chain_text, "the chain annotation") if chain_text else []
    if root.require_tlog:
        when = _integrated_time(annotations.get(BUNDLE_ANNOTATION), leaf, payload, signature, root)
    else:
        when = datetime.datetime.now(datetime.UTC)
    _verify_chain(leaf, offered, root, when)
    usages = _extension(leaf, x509.ExtendedKeyUsage)
    if usages is None or ExtendedKeyUsageOID.CODE_SIGNING not in usages:
        raise VerificationError("the signing certificate is not for code signing")
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise VerificationError("the signing certificate's key is not ECDSA")
    try:
        public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise VerificationError("the certificate's key did not make this signature") from None
    issuer, subjects = _issuer_of(leaf), _subjects_of(leaf)
    for identity in identities:
        if issuer == identity.issuer and any(re.fullmatch(identity.subject, s) for s in subjects):
            return identity
    raise VerificationError(
        f"certificate identity {subjects!r} from issuer {issuer!r} is not trusted"
    )


def certificate_annotations(
    certificate: str | os.PathLike[str], chain: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """The annotations that attach a signing certificate (and its chain) to a signature."""
    try:
        with open(certificate, "rb") as handle:
            leaf = x509.load_pem_x509_certificate(handle.read())
        out = {CERTIFICATE_ANNOTATION: leaf.public_bytes(serialization.Encoding.PEM).decode()}
        if chain is not None:
            with open(chain, "rb") as handle:
                certs = x509.load_pem_x509_certificates(handle.read())
            out[CHAIN_ANNOTATION] = "".join(
                c.public_bytes(serialization.Encoding.PEM).decode() for c in certs
            )
    except (OSError, ValueError) as exc:
        raise KeyProviderError(f"cannot read the signing certificate: {exc}") from None
    return out


__all__ = [
    "BUNDLE_ANNOTATION",
    "CERTIFICATE_ANNOTATION",
    "CHAIN_ANNOTATION",
    "Identity",
    "TrustRoot",
    "certificate_annotations",
    "verify_keyless",
]
