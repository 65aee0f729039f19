"""``pipeline model seal|unseal`` (aliases ``seal``, ``unseal``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline._cli._common import byte_progress, emit, json_option, wants_json

SEGMENT_SIZES = {"1MB": 1 << 20, "4KB": 4096}


def trust_option(func):  # type: ignore[no-untyped-def]
    """``--trust PUBLIC_PEM`` (repeatable): the signers whose model signatures are accepted."""
    return click.option(
        "--trust",
        "trust_keys",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Public key (PEM) of a trusted model signer; repeatable.",
    )(func)


def make_trust(trust_keys: tuple[Path, ...]):  # type: ignore[no-untyped-def]
    from pipeline.signing.model import Trust

    return Trust(public_keys=tuple(trust_keys)) if trust_keys else None


def verified_line(report: dict[str, Any]) -> str:
    """What ``unseal --verify-only`` checked, never claiming a signature it did not check."""
    checked = "key, every segment, digests"
    if report["signature_verified"]:
        return f"verified {report['name']}: signature, {checked}"
    state = ("has a signature that was NOT checked (no trusted signer given)"
             if report.get("signature_present") else "is UNSIGNED (no signature)")
    return (f"{report['name']} {state}; checked only its {checked} "
            "(--allow-unsigned: its origin is unverified)")


@click.command("seal")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key", "key", required=True, help="Key-encryption key name or id.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--provider", default="local", show_default=True, help="Key provider.")
@click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sign the sealed model with this private key (PEM).",
)
@click.option("--segment-size", type=click.Choice(sorted(SEGMENT_SIZES)), default="1MB")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@json_option
def seal_command(
    model_dir: Path,
    key: str,
    out_dir: Path,
    provider: str,
    sign_key: Path | None,
    segment_size: str,
    force: bool,
    as_json: bool,
) -> None:
    """Encrypt MODEL_DIR's weights under a fresh data key wrapped by KEY; write OUT."""
    from pipeline.sealing.seal import seal_model

    progress = None
    if not wants_json(as_json):

        def progress(path: str, size: int) -> None:
            line = f"  sealed {path} ({size:,} bytes)" if size else f"  copied {path}"
            click.echo(line, err=True)

    with byte_progress(f"sealing {model_dir}", not wants_json(as_json)) as on_bytes:
        result = seal_model(
            model_dir,
            out_dir,
            key=key,
            provider=provider,
            sign_key=sign_key,
            segment_size=SEGMENT_SIZES[segment_size],
            force=force,
            progress=progress,
            on_bytes=on_bytes,
        )
    summary = result.to_json()
    emit(
        summary,
        as_json,
        f"sealed {summary['name']} -> {summary['sealed']} "
        f"(key {summary['key_id']}, {'signed' if result.signed else 'UNSIGNED'})",
    )


@click.command("unseal")
@click.argument("sealed_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--verify-only", is_flag=True, help="Check everything; write nothing.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Write plaintext here.")
@trust_option
@click.option("--allow-unsigned", is_flag=True, help="Development only: skip the signature.")
@json_option
def unseal_command(
    sealed_dir: Path,
    verify_only: bool,
    out_dir: Path | None,
    trust_keys: tuple[Path, ...],
    allow_unsigned: bool,
    as_json: bool,
) -> None:
    """Verify a sealed model (--verify-only) or decrypt it to --out (operators only)."""
    from pipeline.sealing.unseal import unseal_to, verify_sealed

    if verify_only == (out_dir is not None):
        raise click.UsageError("give exactly one of --verify-only or --out DIR")
    trust = make_trust(trust_keys)
    if verify_only:
        report = verify_sealed(sealed_dir, trust=trust, allow_unsigned=allow_unsigned)
        emit(report, as_json, verified_line(report))
    else:
        assert out_dir is not None
        report = unseal_to(sealed_dir, out_dir, trust=trust, allow_unsigned=allow_unsigned)
        emit(report, as_json, f"unsealed to {report['unsealed']} (plaintext weights on disk)")
