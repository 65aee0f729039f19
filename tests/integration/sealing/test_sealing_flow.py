"""Seal -> sign -> verify -> load, and every kind of bad input the foundation issue lists.

Each bad input must give a clear error with its documented exit code, load
nothing and write nothing. Real keys, real signatures, real files throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.cli import run
from pipeline.errors import (
    EXIT_INPUT,
    EXIT_INSECURE,
    EXIT_INTEGRITY,
    EXIT_KEY,
    EXIT_VERIFICATION,
    InputError,
    IntegrityError,
    KeyProviderError,
    VerificationError,
)
from pipeline.signing.model import Trust, sign_model
from secure_runtime import build_module, load_sealed, load_sealed_model

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "examples" / "tiny"


@pytest.fixture()
def workspace(sealing_workspace: dict[str, Path]) -> dict[str, Path]:
    """A keyring with one KEK and two signing key pairs, isolated per test."""
    return sealing_workspace


def _seal(ws: dict[str, Path], project: Path, name: str, *extra: str) -> Path:
    out = ws["root"] / name
    code = run(["seal", str(project), "--key", "kek", "--out", str(out),
                "--sign-key", str(ws["private"]), *extra])
    assert code == 0
    return out


def _big_project(root: Path, seed: int = 1) -> Path:
    """A model with several 4 KiB segments, to test segment-level tampering."""
    project = root / f"big{seed}"
    project.mkdir()
    torch.manual_seed(seed)
    save_file({"w": torch.randn(64, 64), "b": torch.randn(64)}, str(project / "w.safetensors"))
    (project / "config.json").write_text('{"x": 1}')
    return project


def _seal_big(ws: dict[str, Path]) -> Path:
    """The multi-segment model sealed with 4 KiB segments."""
    return _seal(ws, _big_project(ws["root"]), "big.sealed", "--segment-size", "4KB")


def _trust(ws: dict[str, Path]) -> Trust:
    return Trust(public_keys=(ws["public"],))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _verify_cli(ws: dict[str, Path], sealed: Path) -> int:
    return run(["unseal", str(sealed), "--verify-only", "--trust", str(ws["public"])])


# -- the good path --------------------------------------------------------------------


def test_round_trip_tensors_equal_the_original(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    tensors = load_sealed(sealed, trust=_trust(workspace))
    original = load_file(str(TINY / "model.safetensors"))
    assert tensors.keys() == original.keys()
    for name in original:
        assert torch.equal(tensors[name], original[name])
    manifest = json.loads((sealed / "seal.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {
        "model.safetensors", "model.py", "config.json", "pipeline.yaml", "requirements.lock"}
    assert not (sealed / "model.safetensors").exists()
    assert (sealed / "model.safetensors.sealed").read_bytes()[:1] == b"\x28"


def test_module_builds_from_verified_code_and_runs(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    model = load_sealed_model(sealed, trust=_trust(workspace))
    module = build_module(model)
    with torch.inference_mode():
        out = module(torch.randn(3, 16))
    assert out.shape == (3, 4)
    assert torch.allclose(out.sum(dim=1), torch.ones(3))
    assert set(model.timings) >= {"verify", "unwrap", "decrypt", "to_device", "total"}
    assert model.name == "tiny" and model.signature_verified


def test_verify_only_and_cli_json(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    capsys.readouterr()
    assert run(["--json", "unseal", str(sealed), "--verify-only", "--trust",
                str(workspace["public"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["signature_verified"]
    assert report["sealed_files"][0]["tensors"] == 4


def test_unseal_out_writes_plaintext_only_on_request(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    out = workspace["root"] / "plain"
    assert run(["unseal", str(sealed), "--out", str(out), "--trust", str(workspace["public"])]) == 0
    assert (out / "model.safetensors").read_bytes() == (TINY / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").stat().st_mode & 0o077 == 0


def test_seal_refuses_existing_output_without_force(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    before = (sealed / "seal.json").read_bytes()
    assert run(["seal", str(TINY), "--key", "kek", "--out", str(sealed)]) == EXIT_INPUT
    assert (sealed / "seal.json").read_bytes() == before
    _seal(workspace, TINY, "tiny.sealed", "--force")
    assert (sealed / "seal.json").read_bytes() != before


def test_sealing_is_reproducible_except_keys(workspace: dict[str, Path]) -> None:
    a = json.loads((_seal(workspace, TINY, "a") / "seal.json").read_text())
    b = json.loads((_seal(workspace, TINY, "b") / "seal.json").read_text())
    for manifest in (a, b):
        manifest["key"].pop("wrapped_key")
        for entry in manifest["files"]:
            entry.get("sealed", {}).pop("sha256", None)
    assert a == b


# -- bad input: each a clear error, nothing loaded, nothing written ----------------------


@pytest.mark.parametrize("where", ["header", "first_segment", "last_segment", "tag"])
def test_flipped_bit_in_sealed_file(workspace: dict[str, Path], where: str) -> None:
    sealed = _seal_big(workspace)
    target = sealed / "w.safetensors.sealed"
    size = target.stat().st_size
    offset = {"header": 5, "first_segment": 100, "last_segment": size - 40, "tag": size - 1}[where]
    _flip(target, offset)
    with pytest.raises(IntegrityError, match="^w.safetensors.sealed: "):  # names the file
        load_sealed(sealed, trust=_trust(workspace))
    assert _verify_cli(workspace, sealed) == EXIT_INTEGRITY


def test_flipped_bit_in_seal_json(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    _flip(sealed / "seal.json", 60)
    with pytest.raises((IntegrityError, InputError)):
        load_sealed(sealed, trust=_trust(workspace))
    assert _verify_cli(workspace, sealed) in (EXIT_INTEGRITY, EXIT_INPUT)


@pytest.mark.parametrize("cut", [1, 16, 4096, 5000])
def test_truncated_file(workspace: dict[str, Path], cut: int) -> None:
    sealed = _seal_big(workspace)
    target = sealed / "w.safetensors.sealed"
    target.write_bytes(target.read_bytes()[:-cut])
    with pytest.raises(IntegrityError, match="truncated|digest|segment"):
        load_sealed(sealed, trust=_trust(workspace))
    assert _verify_cli(workspace, sealed) == EXIT_INTEGRITY


def _resign(ws: dict[str, Path], sealed: Path) -> None:
    """Re-sign after a change, so that the layer under the signature is what is tested."""
    (sealed / "model.sig").unlink()
    sign_model(sealed, private_key=ws["private"])


def _rewrite_manifest(sealed: Path, edit) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((sealed / "seal.json").read_text())
    edit(manifest)
    (sealed / "seal.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def test_segments_reordered_even_when_resigned(workspace: dict[str, Path]) -> None:
    sealed = _seal_big(workspace)
    target = sealed / "w.safetensors.sealed"
    data = target.read_bytes()
    seg = 4096
    reordered = data[:seg] + data[2 * seg : 3 * seg] + data[seg : 2 * seg] + data[3 * seg :]
    target.write_bytes(reordered)
    digest = __import__("hashlib").sha256(reordered).hexdigest()
    _rewrite_manifest(sealed, lambda m: m["files"][1]["sealed"].__setitem__("sha256", digest))
    _resign(workspace, sealed)
    with pytest.raises(IntegrityError, match="segment"):
        load_sealed(sealed, trust=_trust(workspace))
    assert _verify_cli(workspace, sealed) == EXIT_INTEGRITY


def test_files_swapped_between_two_sealed_models(workspace: dict[str, Path]) -> None:
    a = _seal(workspace, TINY, "a.sealed")
    b = _seal(workspace, TINY, "b.sealed")
    shutil.copyfile(b / "model.safetensors.sealed", a / "model.safetensors.sealed")
    with pytest.raises(IntegrityError):
        load_sealed(a, trust=_trust(workspace))
    assert _verify_cli(workspace, a) == EXIT_INTEGRITY


def test_wrong_key_even_when_resigned(workspace: dict[str, Path]) -> None:
    a = _seal(workspace, TINY, "a.sealed")
    b = _seal(workspace, TINY, "b.sealed")
    other_wrapped = json.loads((b / "seal.json").read_text())["key"]["wrapped_key"]
    _rewrite_manifest(a, lambda m: m["key"].__setitem__("wrapped_key", other_wrapped))
    _resign(workspace, a)
    # b's data key unwraps fine, but it is the wrong key for a's ciphertext.
    with pytest.raises(IntegrityError):
        load_sealed(a, trust=_trust(workspace))
    tampered = bytearray(__import__("base64").b64decode(other_wrapped))
    tampered[-1] ^= 1
    _rewrite_manifest(a, lambda m: m["key"].__setitem__(
        "wrapped_key", __import__("base64").b64encode(bytes(tampered)).decode()))
    _resign(workspace, a)
    with pytest.raises(KeyProviderError):
        load_sealed(a, trust=_trust(workspace))
    assert _verify_cli(workspace, a) == EXIT_KEY


def test_unknown_key_id(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    gone = "local:gone:0000000000000000"
    _rewrite_manifest(sealed, lambda m: m["key"].__setitem__("key_id", gone))
    _resign(workspace, sealed)
    with pytest.raises(KeyProviderError):
        load_sealed(sealed, trust=_trust(workspace))
    assert _verify_cli(workspace, sealed) == EXIT_KEY


def test_missing_signature(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    (sealed / "model.sig").unlink()
    with pytest.raises(VerificationError):
        load_sealed(sealed, trust=_trust(workspace))
    assert _verify_cli(workspace, sealed) == EXIT_VERIFICATION


def test_unsigned_model_needs_an_explicit_opt_out(workspace: dict[str, Path]) -> None:
    out = workspace["root"] / "unsigned"
    assert run(["seal", str(TINY), "--key", "kek", "--out", str(out)]) == 0
    with pytest.raises(VerificationError, match="no trusted signer"):
        load_sealed(out)
    assert load_sealed(out, allow_unsigned=True).keys() == load_file(
        str(TINY / "model.safetensors")).keys()


def test_signature_by_an_untrusted_key(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    with pytest.raises(VerificationError):
        load_sealed(sealed, trust=Trust(public_keys=(workspace["other_public"],)))
    assert run(["unseal", str(sealed), "--verify-only", "--trust",
                str(workspace["other_public"])]) == EXIT_VERIFICATION


def test_extra_file_in_sealed_dir(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    (sealed / "evil.py").write_text("import os")
    with pytest.raises(IntegrityError):
        load_sealed(sealed, trust=_trust(workspace))


def test_non_safetensors_payload(workspace: dict[str, Path]) -> None:
    project = workspace["root"] / "pickle"
    project.mkdir()
    (project / "model.bin").write_bytes(os.urandom(5000))
    sealed = _seal(workspace, project, "pickle.sealed")
    with pytest.raises(InputError, match="safetensors"):
        load_sealed(sealed, trust=_trust(workspace))


def test_keyring_with_loose_permissions(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    keyring = Path(os.environ["PIPELINE_KEYRING"])
    keyring.chmod(0o644)
    assert _verify_cli(workspace, sealed) == EXIT_INSECURE
    assert run(["seal", str(TINY), "--key", "kek", "--out", str(workspace["root"] / "x")]) == (
        EXIT_INSECURE)
    assert not (workspace["root"] / "x").exists()


def test_failed_unseal_writes_nothing(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    _flip(sealed / "model.safetensors.sealed", 100)
    out = workspace["root"] / "plain"
    assert run(["unseal", str(sealed), "--out", str(out), "--trust",
                str(workspace["public"])]) == EXIT_INTEGRITY
    assert not out.exists()
    assert not [p for p in workspace["root"].iterdir() if p.name.startswith(".plain")]


def test_cli_user_errors_have_no_traceback(workspace: dict[str, Path]) -> None:
    sealed = _seal(workspace, TINY, "tiny.sealed")
    (sealed / "model.sig").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "unseal", str(sealed), "--verify-only",
         "--trust", str(workspace["public"])],
        capture_output=True, text=True, env=os.environ.copy(), check=False,
    )
    assert proc.returncode == EXIT_VERIFICATION
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")


def test_seal_and_load_with_a_pkcs11_kek(workspace: dict[str, Path], softhsm_env) -> None:  # type: ignore[no-untyped-def]
    """The KEK lives on a real SoftHSM2 token; the wrap and unwrap run on the token."""
    assert run(["keys", "create", "hsm-kek", "--provider", "pkcs11"]) == 0
    out = workspace["root"] / "hsm.sealed"
    assert run(["seal", str(TINY), "--key", "hsm-kek", "--provider", "pkcs11", "--out", str(out),
                "--sign-key", str(workspace["private"])]) == 0
    manifest = json.loads((out / "seal.json").read_text())
    assert manifest["key"]["provider"] == "pkcs11"
    assert manifest["key"]["key_id"].startswith("pkcs11:hsm-kek:")
    tensors = load_sealed(out, trust=_trust(workspace))
    original = load_file(str(TINY / "model.safetensors"))
    assert all(torch.equal(tensors[k], original[k]) for k in original)


# -- devices ------------------------------------------------------------------------------


def test_cuda_loads_onto_the_gpu_or_is_a_config_error(workspace: dict[str, Path]) -> None:
    """On a GPU machine the tensors land on CUDA and equal the original; without one,
    asking for CUDA is a clear configuration error (exit 3), never a silent CPU load."""
    from pipeline.errors import ConfigError

    sealed = _seal(workspace, TINY, "tiny.sealed")
    if torch.cuda.is_available():
        tensors = load_sealed(sealed, device="cuda", trust=_trust(workspace))
        original = load_file(str(TINY / "model.safetensors"))
        for name, tensor in tensors.items():
            assert tensor.device.type == "cuda"
            assert torch.equal(tensor.cpu(), original[name])
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            load_sealed(sealed, device="cuda", trust=_trust(workspace))
    with pytest.raises(ConfigError, match="unknown device"):
        load_sealed(sealed, device="tpu", trust=_trust(workspace))


def test_an_explicit_empty_trust_trusts_nobody(
    workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trust() means "nobody", even where $PIPELINE_TRUST names the right key."""
    sealed = _seal(workspace, TINY, "tiny.sealed")
    monkeypatch.setenv("PIPELINE_TRUST", str(workspace["public"]))
    assert load_sealed(sealed)  # trust=None: the environment's trust applies
    with pytest.raises(VerificationError):
        load_sealed(sealed, trust=Trust())
