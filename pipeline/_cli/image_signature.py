"""``pipeline image sign|verify|attest|verify-attestation`` (aliases without ``image``).

Cosign-compatible image signatures and attestations.

Registry credentials come from PIPELINE_REGISTRY_USERNAME/PASSWORD or docker's
config.json (never argv); a private key's password from
PIPELINE_SIGNING_KEY_PASSWORD. Verification exits 0 only when it succeeded;
any failure is exit 6 (VerificationError) with the reasons.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline._cli._common import emit, json_option
from pipeline._cli._registry import registry_flags
from pipeline.oci.registry import RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])
_PREDICATE_CHOICES = ("slsaprovenance", "cyclonedx", "vuln")
_MAX_PREDICATE_BYTES = 16 << 20


def _private_key_source(ctx: click.Context, param: click.Parameter, value: str) -> str | Path:
    """A ``pkcs11:`` URI stays a URI (token key); anything else must be a PEM file."""
    if value.startswith("pkcs11:"):
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"file {value!r} does not exist", ctx=ctx, param=param)
    return path


_private_key = click.option(
    "--key", "key", required=True, callback=_private_key_source, metavar="PEM|PKCS11_URI",
    help="Private signing key: a PEM file (ECDSA P-256) or a PKCS#11 URI such as "
         "pkcs11:object=release (module, token and PIN from PIPELINE_PKCS11_*).",
)
_public_keys = click.option(
    "--key", "keys", required=True, multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted public key (PEM); repeatable.",
)
_verify_keys = click.option(
    "--key", "keys", multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted public key (PEM); repeatable. Needed unless a keyless identity is given.",
)


def _keyless_flags(func: F) -> F:
    """cosign's keyless verification flags, with the trust root given as local files."""
    pem = click.Path(exists=True, dir_okay=False, path_type=Path)
    for option in reversed([
        click.option("--certificate-identity-regexp", "identity_regexp", default=None,
                     help="Keyless: the certificate SAN must fully match this regex."),
        click.option("--certificate-oidc-issuer", "oidc_issuer", default=None,
                     help="Keyless: the certificate's OIDC issuer (exact)."),
        click.option("--fulcio-root", "fulcio_roots", multiple=True, type=pem,
                     help="Keyless: trusted Fulcio CA certificate(s), PEM; repeatable."),
        click.option("--rekor-key", "rekor_keys", multiple=True, type=pem,
                     help="Keyless: trusted Rekor public key(s), PEM; repeatable."),
        click.option("--insecure-ignore-tlog", is_flag=True, default=False,
                     help="Keyless: accept a signature without a Rekor entry (cert checked "
                          "at the current time)."),
    ]):
        func = option(func)
    return func


def _keyless(keys: tuple[Path, ...], identity_regexp: str | None, oidc_issuer: str | None,
             fulcio_roots: tuple[Path, ...], rekor_keys: tuple[Path, ...],
             ignore_tlog: bool) -> tuple[list[Any], Any]:
    """(identities, trust root) from the keyless flags; UsageError when half given."""
    from pipeline.signing.keyless import Identity, TrustRoot

    if not (identity_regexp or oidc_issuer):
        if not keys:
            raise click.UsageError("give --key, or --certificate-identity-regexp with "
                                   "--certificate-oidc-issuer and --fulcio-root")
        return [], None
    if not (identity_regexp and oidc_issuer and fulcio_roots):
        raise click.UsageError("keyless verification needs --certificate-identity-regexp, "
                               "--certificate-oidc-issuer and --fulcio-root")
    try:
        import re

        re.compile(identity_regexp)
    except re.error as exc:
        raise click.UsageError(f"--certificate-identity-regexp: {exc}") from None
    root = TrustRoot.load(list(fulcio_roots), list(rekor_keys), require_tlog=not ignore_tlog)
    return [Identity(oidc_issuer, identity_regexp)], root


@click.command("sign")
@click.argument("reference")
@_private_key
@click.option("-a", "--annotation", "annotations", multiple=True, metavar="KEY=VALUE",
              help="Extra (signed) annotation in the payload's 'optional' section.")
@click.option("--certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="PEM certificate of --key (e.g. from Fulcio) to attach.")
@click.option("--certificate-chain", type=click.Path(exists=True, dir_okay=False,
                                                     path_type=Path),
              default=None, help="PEM chain of --certificate (intermediates, root).")
@registry_flags()
@json_option
def sign_command(reference: str, key: Path | str, annotations: tuple[str, ...],
                 certificate: Path | None, certificate_chain: Path | None,
                 registry_options: RegistryOptions, as_json: bool) -> None:
    """Sign the manifest REFERENCE names (a tag is resolved to its digest first)."""
    from pipeline.errors import InputError
    from pipeline.signing.image import sign_image

    extra: dict[str, str] = {}
    for item in annotations:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"annotation {item!r} is not KEY=VALUE")
        extra[name] = value
    if certificate_chain is not None and certificate is None:
        raise InputError("--certificate-chain needs --certificate")
    result = sign_image(reference, key, annotations=extra or None,
                        registry_options=registry_options, certificate=certificate,
                        certificate_chain=certificate_chain)
    verb = "signed" if result["added"] else "already signed by this key:"
    emit(result, as_json, f"{verb} {result['digest']} -> {result['discovery_tag']} "
                          f"({result['signatures']} signature(s))")
    _warn_problems(result)


@click.command("verify")
@click.argument("reference")
@_verify_keys
@_keyless_flags
@click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True,
              help="Distinct trusted keys (or keyless identities) that must have signed.")
@click.option("--identity", default=None,
              help="Repository the signature must name (default: REFERENCE's; '*' for any).")
@registry_flags()
@json_option
def verify_command(reference: str, keys: tuple[Path, ...], identity_regexp: str | None,
                   oidc_issuer: str | None, fulcio_roots: tuple[Path, ...],
                   rekor_keys: tuple[Path, ...], insecure_ignore_tlog: bool, threshold: int,
                   identity: str | None, registry_options: RegistryOptions,
                   as_json: bool) -> None:
    """Verify REFERENCE's signatures; exit 0 only when THRESHOLD trusted signers signed it.

    Signers: public keys (--key), or a keyless identity (Fulcio certificate: issuer +
    subject regex) checked against a local trust root (--fulcio-root, --rekor-key).
    """
    from pipeline.signing.image import verify_image

    identities, root = _keyless(keys, identity_regexp, oidc_issuer, fulcio_roots, rekor_keys,
                                insecure_ignore_tlog)
    result = verify_image(reference, list(keys), threshold=threshold, identity=identity,
                          registry_options=registry_options, keyless=identities,
                          trust_root=root)
    emit(result, as_json, f"verified {result['digest']}: signed by "
                          f"{len(result['signers'])} trusted signer(s)")


def _warn_problems(result: dict[str, Any]) -> None:
    """The attachment is durably discoverable (else exit 15), but a copy lags: say so."""
    for problem in result.get("problems") or []:
        click.echo(f"warning: {problem}; `pipeline attach repair {result['reference']}` "
                   "brings the copies in step", err=True)


def _read_predicate(path: Path) -> dict[str, Any]:
    from pipeline.errors import InputError

    try:
        if path.stat().st_size > _MAX_PREDICATE_BYTES:
            raise InputError(f"{path}: predicate larger than 16 MiB")
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON predicate ({exc})") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: the predicate must be a JSON object")
    return document


@click.command("attest")
@click.argument("reference")
@click.option("--type", "predicate_type", required=True,
              help=f"Predicate type: {', '.join(_PREDICATE_CHOICES)} or a URI.")
@click.option("--predicate", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file holding the predicate.")
@_private_key
@registry_flags()
@json_option
def attest_command(reference: str, predicate_type: str, predicate: Path, key: Path | str,
                   registry_options: RegistryOptions, as_json: bool) -> None:
    """Sign an in-toto statement about REFERENCE and attach it (cosign .att + OCI referrer)."""
    from pipeline.signing.attestation import attest

    result = attest(reference, predicate_type, _read_predicate(predicate), key,
                    registry_options=registry_options)
    emit(result, as_json, f"attested {result['predicate_type']} for {result['digest']} -> "
                          f"{result['discovery_tag']}")
    _warn_problems(result)


@click.command("verify-attestation")
@click.argument("reference")
@click.option("--type", "predicate_type", required=True,
              help=f"Predicate type: {', '.join(_PREDICATE_CHOICES)} or a URI.")
@_public_keys
@click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True)
@registry_flags()
@json_option
def verify_attestation_command(reference: str, predicate_type: str, keys: tuple[Path, ...],
                               threshold: int, registry_options: RegistryOptions,
                               as_json: bool) -> None:
    """Verify REFERENCE's attestations of TYPE; exit 0 only when one verified."""
    from pipeline.signing.attestation import verify_attestations

    statements = verify_attestations(reference, predicate_type, list(keys), threshold=threshold,
                                     registry_options=registry_options)
    result = {"reference": reference, "verified": True, "statements": statements}
    emit(result, as_json, f"verified {len(statements)} {statements[0]['predicateType']} "
                          f"attestation(s) for {reference}")
