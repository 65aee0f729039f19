"""``pipeline model sign|verify`` (aliases ``sign-model``, ``verify-model``): model signatures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from pipeline._cli._common import emit, json_option
from pipeline.errors import InputError

_PATH = click.Path(path_type=Path)


@click.command("sign-model")
@click.argument("model_dir", type=_PATH)
@click.option("--key", "private_key", type=_PATH, help="PEM private key (EC P-256).")
@click.option(
    "--pkcs11-uri",
    help="RFC 7512 URI of a token key, e.g. 'pkcs11:object=model-signing' (module, token and "
    "PIN from PIPELINE_PKCS11_* / pipeline.yaml; PINs never on the command line).",
)
@click.option(
    "--identity-token-file",
    type=_PATH,
    help="File holding an OIDC identity token for Sigstore keyless signing.",
)
@click.option("--signature-name", default="model.sig", show_default=True)
@json_option
def sign_model_cmd(
    model_dir: Path,
    private_key: Path | None,
    pkcs11_uri: str | None,
    identity_token_file: Path | None,
    signature_name: str,
    as_json: bool,
) -> None:
    """Sign every file of MODEL_DIR (e.g. a sealed model) into MODEL_DIR/model.sig."""
    from pipeline.signing.model import sign_model

    given = [x for x in (private_key, pkcs11_uri, identity_token_file) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --key, --pkcs11-uri, --identity-token-file")
    if pkcs11_uri is not None and "pin-value=" in pkcs11_uri:
        # argv is visible to every user on the machine (ps, /proc): no secrets in it.
        raise InputError(
            "refusing a PIN on the command line: use pin-source=<file> in the URI "
            "or PIPELINE_PKCS11_PIN_FILE"
        )
    token = None
    if identity_token_file is not None:
        try:
            token = identity_token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"cannot read identity token file {identity_token_file}: {exc}"
            ) from None
    signature = sign_model(
        model_dir,
        private_key=private_key,
        pkcs11_uri=pkcs11_uri,
        identity_token=token,
        signature_name=signature_name,
    )
    signer = "key" if private_key else "pkcs11" if pkcs11_uri else "sigstore-keyless"
    result = {
        "model_dir": str(model_dir),
        "signature": str(signature),
        "signer": signer,
        "bundle_sha256": hashlib.sha256(signature.read_bytes()).hexdigest(),
    }
    emit(result, as_json, f"signed {model_dir} -> {signature}")


@click.command("verify-model")
@click.argument("model_dir", type=_PATH)
@click.option("--trust", "public_keys", multiple=True, type=_PATH, help="Trusted PEM public key.")
@click.option(
    "--certificate-chain",
    multiple=True,
    type=_PATH,
    help="PEM certificate(s) anchoring certificate-based signatures.",
)
@click.option("--identity", multiple=True, help="Trusted Sigstore keyless identity.")
@click.option(
    "--oidc-issuer", multiple=True, help="OIDC issuer for each --identity, in the same order."
)
@click.option(
    "--signature-only",
    is_flag=True,
    help="Check only the signature, not the files (the runtime hashes while decrypting).",
)
@click.option("--signature-name", default="model.sig", show_default=True)
@json_option
def verify_model_cmd(
    model_dir: Path,
    public_keys: tuple[Path, ...],
    certificate_chain: tuple[Path, ...],
    identity: tuple[str, ...],
    oidc_issuer: tuple[str, ...],
    signature_only: bool,
    signature_name: str,
    as_json: bool,
) -> None:
    """Exit 0 only if MODEL_DIR is signed by a trusted signer and every file matches.

    Exit 6: signature missing, invalid or untrusted. Exit 5: a file was added,
    removed or changed since signing.
    """
    from pipeline.signing.model import Trust, verify_model, verify_model_signature

    if len(identity) != len(oidc_issuer):
        raise click.UsageError("give one --oidc-issuer for each --identity")
    trust = Trust(
        public_keys=public_keys,
        certificate_chain=certificate_chain,
        identities=tuple(zip(identity, oidc_issuer, strict=True)),
    )
    if trust.is_empty():
        raise click.UsageError(
            "no trusted signer: give --trust KEY.pub (or --certificate-chain, --identity)"
        )
    check = verify_model_signature if signature_only else verify_model
    manifest = check(model_dir, trust, signature_name=signature_name)
    result = {
        "model_dir": str(model_dir),
        "verified": True,
        "files_checked": not signature_only,
        "files": manifest,
    }
    what = "signature valid" if signature_only else "signature and all files valid"
    emit(result, as_json, f"{model_dir}: {what} ({len(manifest)} files)")
