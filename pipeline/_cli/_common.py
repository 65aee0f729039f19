"""What every command shares: ``--json`` output and printing results.

Commands return a plain dict; :func:`emit` prints it as JSON with ``--json`` or as
short human lines otherwise. Keeping this in one place keeps every command's
machine output the same shape.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """Add ``--json`` to a command (also honoured when given to the ``pipeline`` group)."""
    return click.option(
        "--json", "as_json", is_flag=True, default=False, help="Print the result as JSON."
    )(func)


def wants_json(as_json: bool) -> bool:
    """True when this command or the top-level group asked for JSON."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx else None
    return bool(as_json or (isinstance(root, dict) and root.get("json")))


def emit(result: Mapping[str, Any], as_json: bool, human: str | None = None) -> None:
    """Print ``result``: JSON for machines, ``human`` (or key: value lines) for people."""
    if wants_json(as_json):
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
        return
    if human is not None:
        click.echo(human)
        return
    for key, value in result.items():
        click.echo(f"{key}: {value}")


def warn(message: str) -> None:
    """A warning on stderr, never on stdout (stdout may be JSON)."""
    click.echo(f"warning: {message}", err=True)


def report_error(message: str, code: int, as_json: bool, *, prefix: str = "error: ") -> int:
    """Say why the command failed, on stderr; return ``code`` (the exit code).

    People get one line, ``error: <message>``. With ``--json`` it is one JSON object,
    ``{"error": <message>, "exit_code": <code>}``, as the last line of stderr (a bug's
    traceback or a warning may precede it; stdout stays the command's own output).
    """
    if as_json:
        sys.stderr.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    else:
        click.echo(f"{prefix}{message}", err=True)
    return code


@contextmanager
def step_progress(enabled: bool) -> Iterator[Callable[..., None]]:
    """Rich progress on stderr: a bar for counted steps (downloads, extraction, compression),
    a pulsing bar for the others. Silent with --json, so stdout stays machine-readable."""
    if not enabled:
        yield lambda *_args, **_kwargs: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("working", total=None)

        def say(message: str, done: int | None = None, total: int | None = None) -> None:
            if total is None:
                progress.update(task, description=message, total=None, completed=0)
            else:
                progress.update(task, description=message, total=total, completed=done or 0)

        yield say


@contextmanager
def byte_progress(description: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """Bytes done and speed on stderr; yields the callback to feed (None when silent:
    with --json, or when stderr is not a terminal)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn(description),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)
        yield lambda n: progress.advance(task, n)


@contextmanager
def transfer_progress(client: Any, description: str, enabled: bool) -> Iterator[None]:
    """:func:`byte_progress` for the blobs a RegistryClient uploads or downloads."""
    with byte_progress(description, enabled) as on_bytes:
        client.on_bytes = on_bytes
        try:
            yield
        finally:
            client.on_bytes = None


def write_report(path: Path, text: str) -> None:
    """Write a report file atomically (0644: reports are not secrets); a failed write
    (disk full, file too large, no such directory) leaves the earlier file as it was and
    no temporary file, and is InputError (exit 4), never a traceback."""
    from pipeline._fileio import write_atomic
    from pipeline.errors import InputError

    try:
        write_atomic(path, text, mode=0o644)
    except OSError as exc:
        raise InputError(f"cannot write the report to {path}: "
                         f"{exc.strerror or exc.__class__.__name__}; nothing was written"
                         ) from None
