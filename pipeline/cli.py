"""The ``pipeline`` command: parse, call the library, print. No logic lives here.

The command tree is assembled here, explicitly, from the commands that
:mod:`pipeline._cli` modules define (importing a module registers nothing). Commands
are grouped by noun (``pipeline image sign``, ``pipeline model seal``, ``pipeline
release promote``); every name from before the grouping stays as an alias that is the
same command object (``pipeline sign`` is ``pipeline image sign``), so no script breaks.
docs/cli.md lists the tree and the aliases.

Every :class:`pipeline.errors.PipelineError` becomes ``error: <message>`` on stderr
and its documented exit code (docs/exit-codes.md); with ``--json`` it is one JSON
object, ``{"error": ..., "exit_code": N}``, instead, usage errors included. Only bugs
show a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pipeline import __version__
from pipeline._cli import (
    admission,
    attach,
    build,
    chart,
    deploy,
    hooks,
    image_signature,
    keys,
    model_signature,
    oci,
    policy,
    provenance,
    release,
    release_record,
    report,
    report_error,
    sealing,
    workflow,
)
from pipeline.errors import EXIT_INTERNAL, EXIT_USAGE, PipelineError

EXIT_INTERRUPTED = 130


class CommandTree(click.Group):
    """The root group: lists the noun groups, then the aliases kept for scripts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: alias name → the command path it stands for ("image sign").
        self.aliases: dict[str, str] = {}

    def add_alias(self, name: str, group: click.Group, command: str) -> None:
        """``pipeline NAME`` runs the very command object ``pipeline GROUP COMMAND`` runs."""
        self.add_command(group.commands[command], name)
        self.aliases[name] = f"{group.name} {command}"

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [n for n in self.list_commands(ctx) if not self.commands[n].hidden]
        groups = [n for n in names if n not in self.aliases]
        limit = formatter.width - 6 - max((len(n) for n in groups), default=0)
        primary = [(n, self.commands[n].get_short_help_str(limit)) for n in groups]
        if primary:
            with formatter.section("Commands"):
                formatter.write_dl(primary)
        kept = [(n, f"pipeline {self.aliases[n]}") for n in names if n in self.aliases]
        if kept:
            with formatter.section("Aliases (the same commands, under their earlier names)"):
                formatter.write_dl(kept)


@click.group(cls=CommandTree, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pipeline")
@click.option("--json", "as_json", is_flag=True,
              help="JSON output for every command; errors as {\"error\", \"exit_code\"} on "
                   "stderr.")
@click.pass_context
def main(ctx: click.Context, as_json: bool) -> None:
    """Secure Model Pipeline: seal, sign, build, verify and promote ML models."""
    ctx.obj = {"json": as_json}


def _group(name: str, help_text: str, commands: dict[str, click.Command]) -> click.Group:
    group = click.Group(name, help=help_text)
    for command_name, command in commands.items():
        group.add_command(command, command_name)
    return group


image_group = _group("image", "Container images: build, move, sign, attest, scan.", {
    "build": build.build_cmd,
    "push": oci.push,
    "pull": oci.pull,
    "sign": image_signature.sign_command,
    "verify": image_signature.verify_command,
    "attest": image_signature.attest_command,
    "verify-attestation": image_signature.verify_attestation_command,
    "scan": build.scan_cmd,
    "sbom": build.sbom_cmd,
    "provenance": provenance.provenance_cmd,
})
model_group = _group("model", "Sealed models: seal, sign, verify, move through registries.", {
    "seal": sealing.seal_command,
    "unseal": sealing.unseal_command,
    "sign": model_signature.sign_model_cmd,
    "verify": model_signature.verify_model_cmd,
    "push": oci.push_model_cmd,
    "pull": oci.pull_model_cmd,
    "attach-signature": oci.attach_model_signature_cmd,
})
release_group = _group("release", "Release state kept in the GitOps repository: canary "
                                  "promotion, roll-back, status.", {
    "promote": release.promote_command,
    "rollback": release.rollback_command,
    "status": release.status_command,
    "record": release_record.record_command,
    "environments": release_record.environments_command,
})

gitops_group = _group("gitops", "The GitOps repository Argo CD syncs: Applications per "
                                "environment.", {
    "init": release.gitops_init_command,
})

for _command in (image_group, model_group, release_group, gitops_group, keys.keys_group,
                 build.lock_group, policy.policy_group, chart.chart_group,
                 workflow.workflow_group, hooks.hooks_group, hooks.runs_group,
                 hooks.init_command, admission.admission_group, attach.attach_group):
    main.add_command(_command)
main.add_command(deploy.deploy_cmd)
main.add_command(report.report_command)
# The earlier name of `pipeline chart render`: the same command object (docs/cli.md).
workflow.workflow_group.add_command(chart.render_command, "render-chart")

#: Earlier top-level names → (group, command): each is the same command object.
ALIASES: dict[str, tuple[click.Group, str]] = {
    "build": (image_group, "build"),
    "push": (image_group, "push"),
    "pull": (image_group, "pull"),
    "sign": (image_group, "sign"),
    "verify": (image_group, "verify"),
    "attest": (image_group, "attest"),
    "verify-attestation": (image_group, "verify-attestation"),
    "scan": (image_group, "scan"),
    "sbom": (image_group, "sbom"),
    "provenance": (image_group, "provenance"),
    "seal": (model_group, "seal"),
    "unseal": (model_group, "unseal"),
    "sign-model": (model_group, "sign"),
    "verify-model": (model_group, "verify"),
    "push-model": (model_group, "push"),
    "pull-model": (model_group, "pull"),
    "attach-model-signature": (model_group, "attach-signature"),
    "promote": (release_group, "promote"),
    "rollback": (release_group, "rollback"),
}
for _alias, (_group_object, _name) in ALIASES.items():
    main.add_alias(_alias, _group_object, _name)


def _json_requested(argv: list[str]) -> bool:
    """``--json`` (the group's or the command's) anywhere before ``--``.

    Read from argv, not from the parsed context, so that an error while parsing (an
    unknown option, a missing file) is reported as JSON too.
    """
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of raising ``SystemExit``."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _json_requested(args)
    try:
        main.main(args=args, prog_name="pipeline", standalone_mode=False)
    except PipelineError as exc:
        return report_error(str(exc), exc.exit_code, as_json)
    except click.exceptions.Abort:
        return report_error("aborted", EXIT_USAGE, as_json, prefix="")
    except click.ClickException as exc:
        if as_json:
            return report_error(exc.format_message(), exc.exit_code, True)
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return report_error("interrupted", EXIT_INTERRUPTED, as_json, prefix="")
    except Exception as exc:  # a bug: keep the traceback for the report
        import traceback

        traceback.print_exc()
        return report_error(f"{exc.__class__.__name__}: {exc}", EXIT_INTERNAL, as_json,
                            prefix="internal error: ")
    return 0


def entrypoint(*_: Any) -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))
