"""The deploy's own bytecode compile: only for images that do not ship their bytecode.

``pipeline build`` images carry every module's unchecked-hash pyc beside its source and
say so with a label; compiling them again (minutes, niced) would be wasted, and pointing
``PYTHONPYCACHEPREFIX`` at a compiled copy would hide the shipped pycs. Images without the
label (built elsewhere, or by an older builder) keep the compile-once-per-digest cache.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.deploy.image import ImageCache, UnpackedImage
from pipeline.oci import media_types as mt

DIGEST = "sha256:" + "ab" * 32


def _image(cache: ImageCache, labels: dict[str, str]) -> UnpackedImage:
    tree = cache.root / "rootfs" / DIGEST.replace(":", "-")
    rootfs = tree / "rootfs"
    (rootfs / "usr" / "bin").mkdir(parents=True)
    (rootfs / "usr" / "bin" / "python3").symlink_to("python3.11")
    return UnpackedImage(f"r.test/x@{DIGEST}", DIGEST, rootfs, {"Labels": labels}, True)


def _pycache(cache: ImageCache) -> Path:
    path = cache.root / "rootfs" / (DIGEST.replace(":", "-") + ".pycache")
    path.mkdir(parents=True)
    return path


def test_an_image_that_ships_its_bytecode_is_not_compiled_again(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "state")
    image = _image(cache, {mt.LABEL_BYTECODE: "bytecode-v1 cpython-311 unchecked-hash"})
    assert image.ships_bytecode
    assert cache.compile_bytecode(image) is None  # returns at once: no sandbox, no compile
    assert not (cache.root / "rootfs" / (DIGEST.replace(":", "-") + ".pycache")).exists()
    assert not (image.rootfs / ".pipeline-pycache").exists()
    # Even a compiled tree from an older deploy is not mounted over the shipped pycs.
    _pycache(cache)
    assert cache.bytecode(image) is None


def test_an_image_without_bytecode_keeps_the_compiled_cache(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "state")
    image = _image(cache, {"org.opencontainers.image.title": "elsewhere"})
    assert not image.ships_bytecode
    assert cache.bytecode(image) is None
    compiled = _pycache(cache)
    assert cache.bytecode(image) == compiled  # what pods mount at PYTHONPYCACHEPREFIX
