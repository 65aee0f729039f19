"""The registry flags every command shares, and the one place they become RegistryOptions.

``@registry_flags()`` adds ``--insecure``, ``--ca-file`` and ``--timeout`` (and, where
asked, ``--username``/``--password-stdin`` or ``--registry-timeout``) to a command and hands
the command one ``registry_options: RegistryOptions`` instead of the loose flags, so
every command reaches registries the same way and the library never sees a dict.

``--timeout`` is one total deadline for all of the command's registry work (every
request, retry sleep and token fetch), started when the command starts; the
per-request timeout still applies inside it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from pipeline.oci.registry import Credentials, RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])

_FLAGS = ("ca_file", "username", "password_stdin", "registry_timeout", "total_timeout")


def build_registry_options(
    *,
    insecure: bool = False,
    ca_file: Path | None = None,
    username: str | None = None,
    password_stdin: bool = False,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    total_timeout: float | None = None,
) -> RegistryOptions:
    """RegistryOptions from the flags; the password from stdin or the settings, never argv.

    ``total_timeout``: seconds from now for everything done with the options (a
    :class:`~pipeline.oci.deadline.Deadline`); None: no total limit.
    """
    from pipeline.errors import ConfigError

    credentials = None
    if password_stdin:
        if not username:
            raise ConfigError("--password-stdin needs --username")
        credentials = Credentials(username, sys.stdin.readline().rstrip("\r\n"))
    elif username:
        from pipeline.config import load_settings

        password = load_settings().registry().password
        if password is None:
            raise ConfigError("--username needs --password-stdin or PIPELINE_REGISTRY_PASSWORD")
        credentials = Credentials(username, password)
    defaults = RegistryOptions()
    return RegistryOptions(
        insecure=insecure,
        ca_file=Path(ca_file) if ca_file is not None else None,
        timeout=defaults.timeout if timeout is None else timeout,
        retries=defaults.retries if retries is None else retries,
        backoff=defaults.backoff if backoff is None else backoff,
        credentials=credentials,
    ).with_deadline(total_timeout)


def registry_flags(
    *,
    purpose: str = "",
    credentials: bool = False,
    insecure_flag: str = "--insecure",
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    deadline: bool = True,
) -> Callable[[F], F]:
    """Add the registry flags to a command; it receives ``registry_options`` instead.

    ``purpose`` ends each help text (", with --push"); ``credentials`` adds
    ``--username``/``--password-stdin``; ``timeout`` adds ``--registry-timeout`` with that
    default; ``retries``/``backoff`` are the command's fixed transport policy; ``deadline``
    adds ``--timeout`` (a server, whose deadline is per decision, passes False).
    """

    insecure_dest = insecure_flag.lstrip("-").replace("-", "_")

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            flags = {name: kwargs.pop(name) for name in (*_FLAGS, insecure_dest) if name in kwargs}
            kwargs["registry_options"] = build_registry_options(
                insecure=bool(flags.get(insecure_dest)),
                ca_file=flags.get("ca_file"),
                username=flags.get("username"),
                password_stdin=bool(flags.get("password_stdin")),
                timeout=flags.get("registry_timeout", timeout),
                retries=retries,
                backoff=backoff,
                total_timeout=flags.get("total_timeout"),
            )
            return func(*args, **kwargs)

        wrapped: Any = command
        if deadline:
            wrapped = click.option(
                "--timeout", "total_timeout", default=None, type=click.FloatRange(0.1),
                metavar="SECONDS",
                help="Total seconds for all of this command's registry work (every request, "
                     "retry and token fetch); past it the command fails with exit 9. "
                     "Default: no total limit.",
            )(wrapped)
        if timeout is not None:
            wrapped = click.option(
                "--registry-timeout", "registry_timeout", default=timeout, show_default=True,
                type=click.FloatRange(0.1),
                help="Seconds per registry request" + ("." if deadline else
                     "; also the budget of all registry work for one decision."),
            )(wrapped)
        if credentials:
            wrapped = click.option(
                "--password-stdin", is_flag=True, default=False,
                help="Read the registry password from stdin (else PIPELINE_REGISTRY_PASSWORD, "
                "else docker config.json).",
            )(wrapped)
            wrapped = click.option(
                "--username", default=None,
                help="Registry user (else PIPELINE_REGISTRY_USERNAME).",
            )(wrapped)
        wrapped = click.option(
            "--ca-file", "ca_file", default=None,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help=f"PEM CA bundle to verify the registry's TLS certificate{purpose}.",
        )(wrapped)
        wrapped = click.option(
            insecure_flag, insecure_dest, is_flag=True, default=False,
            help=f"Plain HTTP to the registry; allowed only for loopback registries "
            f"(127.0.0.1, localhost){purpose}.",
        )(wrapped)
        return cast(F, wrapped)

    return decorate
