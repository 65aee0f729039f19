"""``pipeline image push|pull``, ``pipeline model push|pull|attach-signature`` (and aliases).

Move images and sealed models through registries.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from pipeline._cli._common import emit, json_option, transfer_progress, wants_json

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Registry:
    """How to reach the registry, from the options every transfer command shares."""

    insecure: bool
    ca_file: str | None
    username: str | None
    password_stdin: bool

    def client(self, ref: Any) -> Any:
        """A RegistryClient for ``ref``; the password from stdin or the environment."""
        from pipeline.errors import ConfigError
        from pipeline.oci.client import RegistryClient

        password = None
        if self.password_stdin:
            if not self.username:
                raise ConfigError("--password-stdin needs --username")
            password = sys.stdin.readline().rstrip("\r\n")
        elif self.username:
            password = os.environ.get("PIPELINE_REGISTRY_PASSWORD")
            if password is None:
                raise ConfigError(
                    "--username needs --password-stdin or PIPELINE_REGISTRY_PASSWORD"
                )
        return RegistryClient.for_reference(
            ref, insecure=self.insecure, ca_file=self.ca_file, username=self.username,
            password=password,
        )


def _registry_options(func: F) -> F:
    """Add --insecure/--ca-file/--username/--password-stdin; pass them as ``registry``."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        registry = _Registry(*(kwargs.pop(k) for k in
                               ("insecure", "ca_file", "username", "password_stdin")))
        return func(*args, registry=registry, **kwargs)

    wrapped: Any = command
    wrapped = click.option(
        "--password-stdin",
        is_flag=True,
        default=False,
        help="Read the registry password from stdin (else PIPELINE_REGISTRY_PASSWORD, "
        "else docker config.json).",
    )(wrapped)
    wrapped = click.option(
        "--username", default=None, help="Registry user (else PIPELINE_REGISTRY_USERNAME)."
    )(wrapped)
    wrapped = click.option(
        "--ca-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="PEM CA bundle to verify the registry's TLS certificate.",
    )(wrapped)
    wrapped = click.option(
        "--insecure",
        is_flag=True,
        default=False,
        help="Plain HTTP; allowed only for loopback registries (127.0.0.1, localhost).",
    )(wrapped)
    return wrapped  # type: ignore[no-any-return]


@click.command("push")
@click.argument("layout_dir", type=click.Path(file_okay=False))
@click.argument("reference")
@click.option("--tag", default=None, help="Which manifest of the layout (its index.json tag).")
@_registry_options
@json_option
def push(
    layout_dir: str,
    reference: str,
    tag: str | None,
    registry: _Registry,
    as_json: bool,
) -> None:
    """Push the image in OCI layout LAYOUT_DIR to REFERENCE; prints the digest."""
    from pipeline.oci.layout import OCILayout
    from pipeline.oci.reference import Reference
    from pipeline.oci.transfer import push_layout

    ref = Reference.parse(reference)
    layout = OCILayout.open(layout_dir)
    with registry.client(ref) as client:
        with transfer_progress(client, f"pushing {ref}", not wants_json(as_json)):
            digest = push_layout(layout, ref, client, tag=tag)
    pinned = ref.with_digest(digest)
    emit({"reference": str(pinned), "digest": digest}, as_json, digest)


@click.command("pull")
@click.argument("reference")
@click.argument("layout_dir", type=click.Path(file_okay=False))
@click.option("--tag", default=None, help="Tag to record in index.json (default: the ref's).")
@_registry_options
@json_option
def pull(
    reference: str,
    layout_dir: str,
    tag: str | None,
    registry: _Registry,
    as_json: bool,
) -> None:
    """Pull REFERENCE into the OCI layout LAYOUT_DIR (created or extended); prints the digest."""
    from pipeline.oci.reference import Reference
    from pipeline.oci.transfer import pull_to_layout

    ref = Reference.parse(reference)
    with registry.client(ref) as client:
        with transfer_progress(client, f"pulling {ref}", not wants_json(as_json)):
            digest = pull_to_layout(ref, layout_dir, client, tag=tag)
    emit(
        {"reference": str(ref.with_digest(digest)), "digest": digest, "layout": layout_dir},
        as_json,
        digest,
    )


@click.command("push-model")
@click.argument("sealed_dir", type=click.Path(file_okay=False))
@click.argument("reference")
@_registry_options
@json_option
def push_model_cmd(
    sealed_dir: str,
    reference: str,
    registry: _Registry,
    as_json: bool,
) -> None:
    """Push the sealed model in SEALED_DIR as an OCI artifact to REFERENCE; prints the digest."""
    from pipeline.oci.model_artifact import push_model
    from pipeline.oci.reference import Reference

    ref = Reference.parse(reference)
    with registry.client(ref) as client:
        with transfer_progress(client, f"pushing {ref}", not wants_json(as_json)):
            digest = push_model(sealed_dir, ref, client=client)
    emit({"reference": str(ref.with_digest(digest)), "digest": digest}, as_json, digest)


@click.command("pull-model")
@click.argument("reference")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option(
    "--trust",
    "trust_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Public key (PEM) the model signature must verify with (its own model.sig or "
    "an attached one); repeatable. Without it nothing is verified here.",
)
@_registry_options
@json_option
def pull_model_cmd(
    reference: str,
    dest: str,
    trust_keys: tuple[str, ...],
    registry: _Registry,
    as_json: bool,
) -> None:
    """Pull the sealed model artifact REFERENCE into DEST (new or empty directory)."""
    from pathlib import Path

    from pipeline.oci.model_artifact import pull_model
    from pipeline.oci.reference import Reference
    from pipeline.signing.model import Trust

    ref = Reference.parse(reference)
    trust = Trust(public_keys=tuple(Path(k) for k in trust_keys)) if trust_keys else None
    with registry.client(ref) as client:
        with transfer_progress(client, f"pulling {ref}", not wants_json(as_json)):
            path = pull_model(ref, dest, client=client, trust=trust)
    emit(
        {"reference": str(ref), "path": str(path), "verified": trust is not None},
        as_json,
        str(path),
    )


@click.command("attach-model-signature")
@click.argument("reference")
@click.argument("signature", type=click.Path(exists=True, dir_okay=False))
@_registry_options
@json_option
def attach_model_signature_cmd(
    reference: str,
    signature: str,
    registry: _Registry,
    as_json: bool,
) -> None:
    """Attach the model-signing bundle SIGNATURE to the model artifact REFERENCE (referrer)."""
    from pipeline.oci.model_artifact import attach_model_signature
    from pipeline.oci.reference import Reference

    ref = Reference.parse(reference)
    with registry.client(ref) as client:
        digest = attach_model_signature(ref, signature, client=client)
    emit({"reference": str(ref), "signature_manifest": digest}, as_json, digest)
