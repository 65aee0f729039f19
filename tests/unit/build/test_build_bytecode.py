"""The image's bytecode: unchecked-hash pycs, the same bytes on every build, image paths.

Why each check: a pyc that embeds an mtime, the build machine's path, or a set constant in
hash order makes the layer differ between two builds of the same lock; a checked pyc would
make the interpreter re-read the source on a read-only root at every import.
"""

from __future__ import annotations

import importlib.util
import marshal
import struct
import subprocess
import sys
from pathlib import Path

from pipeline.build._tarlayer import REG, Entry
from pipeline.build.bytecode import CACHE_TAG, bytecode_entries, pyc_path

SOURCE = b'ITEMS = {"alpha", "beta", "gamma", "delta"}\n\ndef member(x):\n    return x in ITEMS\n'


def _entries(tmp: Path) -> list[Entry]:
    on_disk = tmp / "mod_b.py"
    on_disk.write_bytes(SOURCE)
    return [
        Entry("usr/lib/pkg/mod_a.py", REG, 0o644, SOURCE),
        Entry("usr/lib/pkg/mod_b.py", REG, 0o644, source=on_disk),
        Entry("usr/lib/pkg/broken.py", REG, 0o644, b"def broken(:\n"),
        Entry("usr/lib/pkg/data.json", REG, 0o644, b"{}"),
    ]


def test_pyc_path_is_where_the_interpreter_looks() -> None:
    assert pyc_path("a/b/mod.py") == f"a/b/__pycache__/mod.{CACHE_TAG}.pyc"
    assert pyc_path("a/b/mod.py") == importlib.util.cache_from_source("a/b/mod.py")


def test_every_compilable_module_gets_an_unchecked_hash_pyc(tmp_path: Path) -> None:
    pycs = bytecode_entries(_entries(tmp_path), tmp_path / "work")
    assert [p.path for p in pycs] == [pyc_path("usr/lib/pkg/mod_a.py"),
                                      pyc_path("usr/lib/pkg/mod_b.py")]
    for pyc in pycs:
        data = pyc.read()
        assert data[:4] == importlib.util.MAGIC_NUMBER
        (flags,) = struct.unpack("<I", data[4:8])
        assert flags == 0b01  # hash-based, not checked: the source is never re-read
        assert data[8:16] == importlib.util.source_hash(SOURCE)
        code = marshal.loads(data[16:])
        # The file's path in the image, not the build machine's temporary copy.
        assert code.co_filename == "/" + pyc.path.replace("__pycache__/", "").replace(
            f".{CACHE_TAG}.pyc", ".py")


def test_two_builds_give_the_same_bytes(tmp_path: Path) -> None:
    runs = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        pycs = bytecode_entries(_entries(tmp_path / name), tmp_path / name / "work")
        runs.append([(p.path, p.read()) for p in pycs])
    assert runs[0] == runs[1]


def test_the_interpreter_uses_the_pyc_without_the_source(tmp_path: Path) -> None:
    """An unchecked pyc is loaded as is: the source may even differ (it is never read)."""
    pkg = tmp_path / "tree" / "usr" / "lib" / "pkg"
    pkg.mkdir(parents=True)
    for pyc in bytecode_entries(_entries(tmp_path), tmp_path / "work"):
        target = tmp_path / "tree" / pyc.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(pyc.read())
    (pkg / "mod_a.py").write_text("raise SystemExit('the source was compiled, not the pyc')\n")
    proc = subprocess.run(
        [sys.executable, "-B", "-c", "import mod_a; print(mod_a.member('beta'))"],
        cwd=pkg, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_built_images_say_they_ship_bytecode() -> None:
    """The label a local deploy reads to skip its own compile (pipeline/deploy/image.py)."""
    from pipeline.build.bytecode import BYTECODE_FORMAT
    from pipeline.build.image import annotations
    from pipeline.build.project import load_project
    from pipeline.oci import media_types as mt

    tiny = Path(__file__).resolve().parents[3] / "examples" / "tiny"
    labels = annotations(load_project(tiny), "1970-01-01T00:00:00Z", "sha256:a", "sha256:b")
    assert labels[mt.LABEL_BYTECODE] == BYTECODE_FORMAT
    assert "unchecked-hash" in BYTECODE_FORMAT and CACHE_TAG in BYTECODE_FORMAT
