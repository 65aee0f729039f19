"""The ``pipeline`` command: parse, call the library, print. No logic lives here.

Every :class:`pipeline.errors.PipelineError` becomes ``error: <message>`` on stderr
and its documented exit code (docs/exit-codes.md); only bugs show a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pipeline import __version__
from pipeline.errors import EXIT_INTERNAL, EXIT_USAGE, PipelineError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pipeline")
@click.option("--json", "as_json", is_flag=True, help="JSON output for every command.")
@click.pass_context
def main(ctx: click.Context, as_json: bool) -> None:
    """Secure Model Pipeline: seal, sign, build, verify and promote ML models."""
    ctx.obj = {"json": as_json}


def _register() -> None:
    # Each capability owns one module of commands; importing it adds them to ``main``.
    import importlib
    import pkgutil

    import pipeline._cli as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"pipeline._cli.{info.name}")


_register()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of raising ``SystemExit``."""
    try:
        main.main(args=argv, prog_name="pipeline", standalone_mode=False)
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: keep the traceback for the report
        import traceback

        traceback.print_exc()
        click.echo(f"internal error: {exc.__class__.__name__}: {exc}", err=True)
        return EXIT_INTERNAL
    return 0


def entrypoint(*_: Any) -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))
