"""The CLI's surface: one explicit command tree, aliases that are the same commands,
JSON errors under ``--json``, and no torch / web / gRPC stack behind any of it.

Why: scripts call the pre-grouping names (``pipeline sign``, ``pipeline seal``), so an
alias must be the very command object, not a copy that drifts; machines that asked for
``--json`` must be able to parse a failure too; and the CLI installs without the
runtime's extra, so nothing it runs may import what only the servers need.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from pipeline.cli import ALIASES, main, run
from pipeline.errors import EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "examples" / "tiny"
#: What only `python -m secure_runtime` or `pipeline admission serve` need ([runtime],
#: [admission] extras): none of it may load for any other command.
SERVER_STACK = ("torch", "fastapi", "starlette", "uvicorn", "grpc", "safetensors")


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _paths(command, (*prefix, name))
    return found


def test_the_tree_is_noun_first() -> None:
    groups = {name for name, cmd in main.commands.items() if isinstance(cmd, click.Group)}
    assert groups == {"admission", "attach", "chart", "gitops", "hooks", "image", "keys", "lock",
                      "model", "policy", "release", "runs", "workflow"}
    image, model, release = (main.commands[g] for g in ("image", "model", "release"))
    assert isinstance(image, click.Group) and isinstance(model, click.Group)
    assert isinstance(release, click.Group)
    assert {"sign", "verify", "attest", "verify-attestation"} <= set(image.commands)
    assert {"seal", "unseal", "sign", "verify", "push", "pull"} <= set(model.commands)
    assert set(release.commands) == {"promote", "rollback", "status", "record",
                                     "environments"}
    # Top-level commands that are not a group or an alias (issue 12's interface):
    # `pipeline init DIR` and the evidence report, which spans every noun; `pipeline
    # deploy --local` (issue 9's interface).
    standalone = {name for name, cmd in main.commands.items()
                  if not isinstance(cmd, click.Group) and name not in ALIASES}
    assert standalone == {"deploy", "init", "report"}


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_each_alias_is_the_same_command_object(alias: str) -> None:
    group, name = ALIASES[alias]
    assert main.commands[alias] is group.commands[name]
    assert main.commands[str(group.name)] is group


def test_every_earlier_name_is_kept() -> None:
    """The names scripts used before the grouping (docs/cli.md lists them)."""
    earlier = {"build", "scan", "sbom", "provenance", "push", "pull", "push-model",
               "pull-model", "attach-model-signature", "sign", "verify", "attest",
               "verify-attestation", "sign-model", "verify-model", "seal", "unseal",
               "promote", "rollback", "keys", "lock", "policy", "release", "workflow",
               "admission"}
    assert earlier <= set(main.commands)


def test_importing_a_command_module_registers_nothing() -> None:
    code = textwrap.dedent("""
        import importlib, pkgutil, click
        import pipeline._cli as package
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module("pipeline._cli." + info.name)
        import sys
        assert "pipeline.cli" not in sys.modules, "a command module imports pipeline.cli"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_help_of_every_command_loads_no_server_stack() -> None:
    """Every module of the CLI imported and every command's --help run, in a fresh process."""
    code = textwrap.dedent(f"""
        import contextlib, importlib, io, pkgutil, sys
        import pipeline.cli
        import pipeline._cli as package
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module("pipeline._cli." + info.name)
        paths = {[list(p) for p in _paths(main)]!r}
        failed = []
        for path in [[]] + paths:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = pipeline.cli.run([*path, "--help"])
            if code != 0 or "Usage:" not in out.getvalue():
                failed.append((path, code))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {SERVER_STACK!r})
        print(len(paths), failed, loaded)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    count, failed, loaded = out.stdout.strip().split(" ", 2)
    assert int(count) == len(_paths(main)) > 40
    assert (failed, loaded) == ("[]", "[]"), out.stdout


def test_non_runtime_commands_run_with_the_server_stack_unimportable(tmp_path: Path) -> None:
    """Real commands in a process where importing torch, fastapi, grpc ... fails."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {SERVER_STACK!r}:
                    raise ImportError(f"{{name}} is not installed (blocked by the test)")
                return None

        sys.meta_path.insert(0, Block())
        from pipeline.cli import run
        t = sys.argv[1]
        steps = [
            ["keys", "create", "kek"],
            ["keys", "create-signing", "signer", "--dir", t],
            ["model", "seal", {str(TINY)!r}, "--key", "kek", "--out", t + "/sealed",
             "--sign-key", t + "/signer.key"],
            ["model", "verify", t + "/sealed", "--trust", t + "/signer.pub"],
            ["model", "unseal", t + "/sealed", "--verify-only", "--trust", t + "/signer.pub"],
            ["sign-model", t + "/sealed", "--key", t + "/signer.key", "--signature-name",
             "again.sig"],
            ["workflow", "render", "--out", t + "/workflows"],
            ["policy", "check", t + "/workflows"],
        ]
        for step in steps:
            code = run(["--json", *step])
            if code != 0:
                raise SystemExit(f"{{step}}: exit {{code}}")
        code = run(["admission", "serve", "--policies", "p", "--image-policy", "i",
                    "--tls-cert", "c", "--tls-key", "k"])
        print("admission", code)
    """)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "PIPELINE_KEYRING": str(tmp_path / "keyring.json")}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    # The one command that needs the web stack says which extra, as a config error (3).
    assert "admission 3" in out.stdout
    assert "'secure-model-pipeline[admission]'" in out.stderr
    assert (tmp_path / "sealed" / "seal.json").is_file()
    assert sorted(p.name for p in (tmp_path / "workflows").iterdir()) == [
        "pr-check.yaml", "release.yaml", "rollback.yaml"]


# ---------------------------------------------------------------------------- --json errors


def _json_error(capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, object]]:
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    return captured.out, json.loads(last)


def test_a_pipeline_error_is_json(capsys: pytest.CaptureFixture[str],
                                  keys: Callable[[str], tuple[Path, Path]]) -> None:
    _, public = keys("alice")
    # A closed port on loopback: the registry is unreachable (after the client's retries).
    code = run(["--json", "verify", "127.0.0.1:9/x@sha256:" + "0" * 64, "--key", str(public),
                "--insecure"])
    out, error = _json_error(capsys)
    assert code == EXIT_UNREACHABLE and out == ""
    assert error["exit_code"] == EXIT_UNREACHABLE and "127.0.0.1:9" in str(error["error"])


def test_the_interface_example_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``pipeline --json verify nosuch.invalid/x@sha256:<64 zeros>`` (no trusted key)."""
    code = run(["--json", "verify", "nosuch.invalid/x@sha256:" + "0" * 64])
    _, error = _json_error(capsys)
    assert code != 0 and error["exit_code"] == code and error["error"]


@pytest.mark.parametrize("argv", [
    ["--json", "verify", "--no-such-flag"],
    ["verify", "--json", "--no-such-flag"],  # the command's own --json counts too
    ["--json", "no-such-command"],
    ["--json", "model", "unseal", "x", "--verify-only", "--out", "y"],
])
def test_a_usage_error_is_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = run(argv)
    out, error = _json_error(capsys)
    assert code == EXIT_USAGE and error == {"error": error["error"], "exit_code": EXIT_USAGE}
    assert out == "" and "Usage:" not in str(error["error"])


def test_a_missing_file_is_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Checked by click (exists=True): a usage error.
    code = run(["--json", "image", "verify", "r.invalid/x@sha256:" + "0" * 64, "--key",
                str(tmp_path / "absent.pub")])
    _, error = _json_error(capsys)
    assert code == EXIT_USAGE and "absent.pub" in str(error["error"])
    # Checked by the library: its own exit code.
    code = run(["--json", "model", "verify", str(tmp_path / "absent"), "--trust",
                str(tmp_path / "k.pub")])
    _, error = _json_error(capsys)
    assert code == error["exit_code"] == EXIT_NOT_FOUND and "absent" in str(error["error"])


def test_without_json_errors_stay_one_plain_line(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    code = run(["verify-model", str(tmp_path / "absent"), "--trust", str(tmp_path / "k.pub")])
    err = capsys.readouterr().err
    assert code == EXIT_NOT_FOUND and err.startswith("error: ") and err.count("\n") == 1


def test_docs_list_every_command_and_alias() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    commands_section = text.split("## Commands", 1)[1].split("## Aliases", 1)[0]
    documented: set[tuple[str, ...]] = set()
    top_level: set[str] = set()
    for line in commands_section.splitlines():
        if not line.startswith("| `pipeline "):
            continue
        first, *more = line.split("|")[1].strip().split(" / ")
        words = first.strip("`").split()
        if len(words) == 2:  # a command of its own, in no group (pipeline init)
            top_level.add(words[1])
            continue
        _, group, name = words
        documented |= {(group, name)} | {(group, m.strip("`")) for m in more}
    grouped = {p for p in _paths(main) if p[0] not in ALIASES and len(p) == 2}
    assert documented == grouped
    alone = {n for n, c in main.commands.items()
             if n not in ALIASES and not isinstance(c, click.Group)}
    assert top_level == alone
    for alias, (group, name) in ALIASES.items():
        assert f"| `pipeline {alias}` | `pipeline {group.name} {name}` |" in text, alias
