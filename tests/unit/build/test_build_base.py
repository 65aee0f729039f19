"""Base assembly rules, the .deb and layer caches' integrity checks, and reproducible RECORDs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.build._tarlayer import REG, Entry
from pipeline.build.base import keep, status_file
from pipeline.build.cache import LayerCache
from pipeline.build.debian import DebianLock, LockedPackage, fetch_debs
from pipeline.build.wheels import SITE_DIR, site_entries
from pipeline.errors import BuildError, ConfigError, IntegrityError


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("usr/bin/python3.11", True),
        ("bin/bash", False),
        ("usr/bin/ldd", False),
        ("usr/sbin/update-ca-certificates", False),
        ("usr/share/doc/libc6/copyright", True),
        ("usr/share/doc/libc6/changelog.Debian.gz", False),
        ("usr/share/man/man1/python3.11.1.gz", False),
        ("usr/share/locale/de/LC_MESSAGES/libc.mo", False),
        ("var/lock", False),
        ("lib/x86_64-linux-gnu/libc.so.6", True),
    ],
)
def test_what_the_base_keeps(path: str, kept: bool) -> None:
    assert keep(path) is kept


def test_status_file_marks_installed_and_checks_the_lock() -> None:
    control = "Package: libc6\nVersion: 2.36\nArchitecture: amd64\nDescription: x\n more\n"
    text = status_file(control, LockedPackage("libc6", "2.36", "ab" * 32)).decode()
    assert text.splitlines()[:2] == ["Package: libc6", "Status: install ok installed"]
    with pytest.raises(BuildError):
        status_file(control, LockedPackage("libc6", "2.37", "ab" * 32))


def test_cached_deb_that_does_not_match_the_lock_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PIPELINE_DEB_CACHE", str(tmp_path))
    sha = hashlib.sha256(b"the real package").hexdigest()
    (tmp_path / f"{sha}.deb").write_bytes(b"a tampered package")
    lock = DebianLock((LockedPackage("libc6", "2.36", sha),))
    with pytest.raises(IntegrityError):
        fetch_debs(lock)
    assert not (tmp_path / f"{sha}.deb").exists()


def test_layer_cache_drops_a_tampered_blob(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    key = "sha256:" + "1" * 64
    layer = cache.build(key, [Entry("etc/x", REG, 0o644, b"x")])
    assert cache.get(key) == layer
    layer.blob.write_bytes(b"not the layer")
    assert cache.get(key) is None


def test_record_drops_console_scripts_so_the_layer_is_host_independent(tmp_path: Path) -> None:
    info = tmp_path / "idna-3.20.dist-info"
    info.mkdir()
    (info / "RECORD").write_text(
        "../../bin/idna,sha256=host-specific,166\nidna/__init__.py,sha256=abc,10\n"
    )
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "idna").write_text("#!/host/python\n")
    entries = {e.path: e for e in site_entries(tmp_path)}
    assert f"{SITE_DIR}/bin/idna" not in entries
    assert entries[f"{SITE_DIR}/idna-3.20.dist-info/RECORD"].data == (
        b"idna/__init__.py,sha256=abc,10\n"
    )


def test_files_only_read_when_building_against_a_package_are_left_out(tmp_path: Path) -> None:
    """torch's headers, CMake files and C++ tests are not shipped (no compiler in the
    image), and RECORD no longer lists them; the modules and libraries stay."""
    files = {"torch/__init__.py": "", "torch/lib/libtorch.so": "elf",
             "torch/include/ATen/ATen.h": "#pragma once", "torch/test/Dict_test": "elf",
             "torch/share/cmake/Torch/TorchConfig.cmake": "", "torch/lib/libx.a": "!<arch>",
             "numpy/_core/include/numpy/arrayobject.h": ""}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    info = tmp_path / "torch-2.13.0.dist-info"
    info.mkdir()
    (info / "RECORD").write_text("".join(f"{rel},sha256=x,1\n" for rel in files)
                                 + '"torch/include/a,b.h",sha256=x,1\n')
    entries = {e.path: e for e in site_entries(tmp_path)}
    shipped = {p.removeprefix(SITE_DIR + "/") for p in entries}
    assert shipped == {"torch/__init__.py", "torch/lib/libtorch.so",
                       "torch-2.13.0.dist-info/RECORD"}
    assert entries[f"{SITE_DIR}/torch-2.13.0.dist-info/RECORD"].data == (
        b"torch/__init__.py,sha256=x,1\ntorch/lib/libtorch.so,sha256=x,1\n")


def test_attach_refuses_mismatched_or_missing_subjects() -> None:
    from pipeline.scan.attest import attach
    from pipeline.scan.findings import ScanResult

    result = ScanResult("img", "sha256:" + "0" * 64, "trivy", (), False)
    sbom = {"metadata": {"component": {"version": "sha256:" + "1" * 64}}}
    with pytest.raises(ConfigError):
        attach("127.0.0.1:1/x:v1", "unused.key", sbom=sbom, result=result)
    with pytest.raises(ConfigError):
        attach("127.0.0.1:1/x:v1", "unused.key")
