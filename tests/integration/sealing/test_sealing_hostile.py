"""Hostile sealed models and model directories: the documented error, never a traceback.

Real keys, real signatures, the real CLI (in a subprocess where the exit status and the
absence of a traceback are the point). Each edited ``seal.json`` is re-signed where the
test says so, so that the check under the signature is what is tested: a well-signed
hostile manifest must be refused as surely as an unsigned one.
"""

from __future__ import annotations

import os
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import EXIT_INPUT, InputError
from pipeline.signing.model import Trust, sign_model
from secure_runtime import load_sealed

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "examples" / "tiny"


@pytest.fixture()
def ws(sealing_workspace: dict[str, Path]) -> dict[str, Path]:
    return sealing_workspace


def _seal(ws: dict[str, Path], name: str, *, signed: bool = True,
          project: Path = TINY) -> Path:
    out = ws["root"] / name
    extra = ["--sign-key", str(ws["private"])] if signed else []
    assert run(["seal", str(project), "--key", "kek", "--out", str(out), *extra]) == 0
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` in a fresh process: its real exit status and stderr."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True,
                          text=True, env=os.environ.copy(), check=False, timeout=120)


def _edit_seal_json(sealed: Path, edit, *, resign: bool, ws: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    path = sealed / "seal.json"
    path.write_text(edit(path.read_text()))
    if resign:
        (sealed / "model.sig").unlink()
        sign_model(sealed, private_key=ws["private"])


def _huge_size(text: str) -> str:
    return re.sub(r'"size": \d+', '"size": ' + "9" * 5001, text, count=1)


def _duplicate_name(text: str) -> str:
    return text.replace('"name": "tiny"', '"name": "tiny",\n  "name": "other"', 1)


@pytest.mark.parametrize("resign", [False, True], ids=["tampered", "re-signed"])
def test_a_5001_digit_size_is_exit_4_with_a_clear_message(ws: dict[str, Path],
                                                          resign: bool) -> None:
    sealed = _seal(ws, "tiny.sealed")
    _edit_seal_json(sealed, _huge_size, resign=resign, ws=ws)
    proc = _cli("unseal", str(sealed), "--verify-only", "--trust", str(ws["public"]))
    assert proc.returncode == EXIT_INPUT, proc.stderr
    assert proc.stderr.startswith("error: seal.json: integer of 5001 digits"), proc.stderr
    assert "Traceback" not in proc.stderr and "4300" not in proc.stderr
    # The runtime's loader raises the documented error type, not a bare ValueError.
    with pytest.raises(InputError, match="integer of 5001 digits") as caught:
        load_sealed(sealed, trust=Trust(public_keys=(ws["public"],)))
    assert not isinstance(caught.value, ValueError)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_duplicate_keys_in_seal_json_are_refused_signed_or_not(ws: dict[str, Path],
                                                               signed: bool) -> None:
    sealed = _seal(ws, "tiny.sealed", signed=signed)
    _edit_seal_json(sealed, _duplicate_name, resign=signed, ws=ws)
    args = ["--trust", str(ws["public"])] if signed else ["--allow-unsigned"]
    proc = _cli("unseal", str(sealed), "--verify-only", *args)
    assert proc.returncode == EXIT_INPUT, proc.stderr
    assert "seal.json: duplicate key 'name'" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(InputError, match="duplicate key"):
        load_sealed(sealed, trust=Trust(public_keys=(ws["public"],)) if signed else None,
                    allow_unsigned=not signed)


def test_verify_only_says_plainly_that_an_unsigned_model_is_unsigned(
        ws: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    unsigned = _seal(ws, "unsigned.sealed", signed=False)
    capsys.readouterr()
    assert run(["unseal", str(unsigned), "--verify-only", "--allow-unsigned"]) == 0
    out = capsys.readouterr().out
    assert "tiny is UNSIGNED (no signature)" in out, out
    assert "signature," not in out and not out.startswith("verified")
    # Signed, but nobody said whom to trust: the signature exists and was not checked.
    signed = _seal(ws, "signed.sealed")
    assert run(["unseal", str(signed), "--verify-only", "--allow-unsigned"]) == 0
    out = capsys.readouterr().out
    assert "has a signature that was NOT checked" in out, out
    assert run(["unseal", str(signed), "--verify-only", "--trust", str(ws["public"])]) == 0
    assert capsys.readouterr().out.startswith("verified tiny: signature, key")


def _safetensors(header: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize("content", [
    random.Random(10).randbytes(4096),
    _safetensors(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                 b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4),
    _safetensors(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 4),
    b"\x05",
], ids=["random", "duplicate-tensor", "truncated-data", "short"])
def test_seal_refuses_a_safetensors_file_that_is_not_one(ws: dict[str, Path], content: bytes
                                                         ) -> None:
    project = ws["root"] / "bogus"
    project.mkdir()
    (project / "model.safetensors").write_bytes(content)
    (project / "config.json").write_text("{}")
    out = ws["root"] / "bogus.sealed"
    proc = _cli("seal", str(project), "--key", "kek", "--out", str(out), "--sign-key",
                str(ws["private"]))
    assert proc.returncode == EXIT_INPUT, proc.stderr
    assert proc.stderr.startswith(f"error: {project / 'model.safetensors'}: "), proc.stderr
    assert "safetensors" in proc.stderr and "Traceback" not in proc.stderr
    # Nothing half-written: no output, no temporary directory beside it.
    assert not out.exists()
    assert not [p for p in ws["root"].iterdir() if p.name.startswith(".bogus.sealed")]
