"""Images for local pods: pulled by digest, unpacked once per manifest digest.

Why a cache keyed by digest: a digest names exactly one content, so the unpacked tree of
``repo@sha256:X`` can be reused by every pod and every later start without asking the
registry again (the second start of ``pipeline deploy --local`` skips pull and unpack).
Blobs are verified against their digests as they arrive (``pull_to_layout``),
and a tree is published atomically (a crash leaves no half-unpacked root), so a cached tree
is always a complete unpack of verified layers. Layers are applied in order with OCI
whiteouts; a member that would land outside the tree (``..``, absolute paths, links that
point out) is refused: links already written are resolved inside the tree (``_inside``).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import queue
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline._fileio import atomic_directory
from pipeline.errors import InputError
from pipeline.oci import media_types as mt
from pipeline.oci.layer_codec import READ_ERRORS, compression_of, open_layer
from pipeline.oci.layout import OCILayout
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client
from pipeline.oci.tar_members import TarMembers

#: Where pods of a Python image see the deploy's compiled bytecode (read-only).
PYCACHE_MOUNT = "/.pipeline-pycache"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_NO_ID = 2**32 - 1  # (uid_t)-1: "unchanged" to chown, and no larger id exists
#: Symbolic links followed in resolving one path, at most (the kernel's MAXSYMLINKS).
_MAX_LINKS = 40
#: ValueError: what an os call raises for what no header check foresaw (fail closed:
#: the layer is refused with the message, never a traceback).
_UNPACK_ERRORS: tuple[type[Exception], ...] = (*READ_ERRORS, ValueError)


@dataclass(frozen=True)
class UnpackedImage:
    """An unpacked image: its root tree and the ``config`` section of its OCI config."""

    reference: str
    digest: str
    rootfs: Path
    config: dict[str, Any]
    #: True when this start found the tree already unpacked (no pull, no unpack).
    cached: bool

    @property
    def ships_bytecode(self) -> bool:
        """Whether the image says every module has its bytecode beside it
        (``pipeline build`` images: :data:`~pipeline.oci.media_types.LABEL_BYTECODE`).

        Why a label and not a look at the tree: some sources never compile (templates,
        another version's code), so "every ``.py`` has a ``.pyc``" is false even for a
        complete build, and only the builder knows which failed. A wrong label only
        costs speed: the interpreter compiles, in memory, what has no bytecode.
        """
        return bool((self.config.get("Labels") or {}).get(mt.LABEL_BYTECODE))


def require_digest(image: str) -> Reference:
    """The parsed reference; InputError unless it is pinned by digest (a tag can move)."""
    ref = Reference.parse(image)
    if not ref.digest:
        raise InputError(f"image {image!r} has no digest: local pods run images by digest "
                         "only (REPO@sha256:...)")
    return ref


class ImageCache:
    """Pulled blobs (one OCI layout) and unpacked trees (one per manifest digest)."""

    def __init__(self, root: Path, registry_options: RegistryOptions | None = None) -> None:
        self.root = Path(root)
        self.registry_options = registry_options or RegistryOptions()

    def _tree(self, digest: str) -> Path:
        return self.root / "rootfs" / digest.replace(":", "-")

    def get(self, image: str) -> UnpackedImage:
        """The unpacked tree of ``image`` (REPO@sha256:...), pulling and unpacking if needed.

        One pull and one unpack per digest, even when several workloads (threads) or
        deploys (processes) ask at once: they wait on the digest's lock file."""
        ref = require_digest(image)
        assert ref.digest is not None
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / ref.digest.replace(":", "-"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return self._get(ref)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _get(self, ref: Reference) -> UnpackedImage:
        assert ref.digest is not None
        tree = self._tree(ref.digest)
        if (tree / "config.json").is_file():
            return UnpackedImage(str(ref), ref.digest, tree / "rootfs",
                                 json.loads((tree / "config.json").read_bytes()), True)
        layout = self._pull(ref)
        manifest = json.loads(layout.read_blob(ref.digest))
        if "layers" not in manifest:
            raise InputError(f"image {ref}: {manifest.get('mediaType', 'manifest')} is not a "
                             "single-platform image manifest")
        config = json.loads(layout.read_blob(manifest["config"]["digest"])).get("config") or {}
        try:
            with atomic_directory(tree, mode=0o755, take_empty=True,
                                  on_exists=lambda _p: FileExistsError()) as tmp:
                rootfs = tmp / "rootfs"
                rootfs.mkdir(mode=0o755)
                for layer in manifest["layers"]:
                    _apply_layer(layout.blob_path(layer["digest"]), layer.get("mediaType", ""),
                                 rootfs, f"{ref}: layer {layer['digest']}")
                (tmp / "config.json").write_text(json.dumps(config))
        except FileExistsError:
            pass  # another deploy unpacked the same digest meanwhile: same content
        return UnpackedImage(str(ref), ref.digest, tree / "rootfs", config, False)

    def bytecode(self, image: UnpackedImage) -> Path | None:
        """The image's compiled bytecode (see :meth:`compile_bytecode`), when there is one
        (never for an image that ships its own: ``PYTHONPYCACHEPREFIX`` would hide it)."""
        if image.ships_bytecode:
            return None
        tree = self._tree(image.digest).with_name(
            self._tree(image.digest).name + ".pycache")
        return tree if tree.is_dir() else None

    def compile_bytecode(self, image: UnpackedImage) -> Path | None:
        """Compile the image's Python sources once per digest, with its own interpreter.

        Only for images without bytecode of their own (``ships_bytecode`` false: built
        elsewhere, or by an older ``pipeline build``). Why: such an image's root is
        read-only, so every start compiles every module it imports again: 2-3x the import
        time of torch measured here. The deploy compiles them once, after the first start
        (``unchecked-hash`` pycs: the tree never changes under a digest), as uid 65534 in
        a sandbox without network that can write only the cache directory; pods of that
        digest then read it through ``PYTHONPYCACHEPREFIX`` (read-only). Returns None for
        an image without ``/usr/bin/python3``.
        """
        python = image.rootfs / "usr" / "bin" / "python3"
        if image.ships_bytecode or not (python.exists() or python.is_symlink()):
            return None
        done = self.bytecode(image)
        if done is not None:
            return done
        target = self._tree(image.digest).with_name(self._tree(image.digest).name + ".pycache")
        env = [a for item in image.config.get("Env") or [] if "=" in item
               for a in ("--setenv", *item.split("=", 1))]
        (image.rootfs / PYCACHE_MOUNT.lstrip("/")).mkdir(exist_ok=True)
        script = ("import compileall, os, sys\n"
                  "mode = compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH\n"
                  "for p in sys.path:\n"
                  "    if os.path.isdir(p):\n"
                  "        compileall.compile_dir(p, quiet=2, workers=1, invalidation_mode=mode)\n")
        try:
            with atomic_directory(target, mode=0o755, take_empty=True,
                                  on_exists=lambda _p: FileExistsError()) as tmp:
                os.chown(tmp, 65534, 65534)
                root_fd = os.open(image.rootfs, os.O_PATH | os.O_DIRECTORY)
                try:
                    subprocess.run(
                        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                         "bwrap", "--ro-bind-fd", str(root_fd), "/", "--proc", "/proc",
                         "--dev", "/dev", "--tmpfs", "/tmp", "--bind", str(tmp), PYCACHE_MOUNT,
                         "--unshare-all", "--die-with-parent", "--clearenv", *env,
                         "--setenv", "PYTHONPYCACHEPREFIX", PYCACHE_MOUNT,
                         "--unsetenv", "PYTHONDONTWRITEBYTECODE", "--chdir", "/",
                         "--", "/usr/bin/python3", "-c", script],
                        pass_fds=[root_fd], check=True, capture_output=True, timeout=1800,
                        preexec_fn=lambda: os.nice(19))
                finally:
                    os.close(root_fd)
                for path in [tmp, *tmp.rglob("*")]:
                    os.lchown(path, 0, 0)
        except FileExistsError:
            pass
        except (OSError, subprocess.SubprocessError):
            return None  # an optimisation only: pods compile as they import, as before
        return self.bytecode(image)

    def _pull(self, ref: Reference) -> OCILayout:
        from pipeline.oci.transfer import pull_to_layout

        layout_dir = self.root / "blobs"
        with open(self.root / "locks" / "layout", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            layout = OCILayout.create(layout_dir)
        assert ref.digest is not None
        if not layout.has_blob(ref.digest):
            with open_client(ref, None, self.registry_options) as client:
                pull_to_layout(ref, str(layout_dir), client, tag=None)
        return layout


def _apply_layer(blob: Path, media_type: str, rootfs: Path, where: str) -> None:
    """Extract one layer over ``rootfs``, honouring whiteouts (OCI image-spec layer.md).

    Why not ``tarfile.extractall``: with its safety filter it took 15 s for the 240 MB
    torch layer here (a ``realpath`` per member); this writes each member itself, with the
    same guarantees (nothing lands outside the tree: links are resolved inside it), while a
    second thread inflates the stream (zlib and zstd release the GIL). The hot loop is
    syscalls, so it makes few: headers come from :class:`~pipeline.oci.tar_members.TarMembers`
    (not ``tarfile``'s stream reader), directories already resolved are remembered (until a
    member removes or replaces something, which could change what a path leads to), a
    file is created with its mode and written with ``os.write``, and ``chown``/``chmod``
    run only when what the kernel gave differs from what the layer asks for.
    (``tarfile``'s stream reader, with the same ``_Unpack``, is bench/bench_unpack.py's
    baseline.)
    """
    compression = compression_of(media_type, where)
    try:
        with _Inflater(blob, compression) as stream:
            unpack = _Unpack(rootfs, where)
            members = TarMembers(stream, where)
            for member in members:
                unpack.member(member, members.copy_to)
    except _UNPACK_ERRORS as exc:
        raise InputError(f"{where}: cannot unpack: {exc}") from None


class _Unpack:
    """The members of one layer, written under ``rootfs`` (see :func:`_apply_layer`)."""

    def __init__(self, rootfs: Path, where: str) -> None:
        self.rootfs = rootfs
        self.where = where
        self.written: set[str] = set()
        #: Parent paths (relative) already resolved inside the tree to existing directories.
        self.dirs: dict[str, str] = {"": str(rootfs)}
        self.umask = _umask()
        self.uid, self.gid = os.geteuid(), os.getegid()
        # What a new entry is owned by without chown: us, unless the tree sits in a setgid
        # directory (then new entries take its group, and every owner is set explicitly).
        self.owner_is_ours = not os.stat(rootfs).st_mode & stat.S_ISGID

    def _parent(self, parent: str) -> str:
        found = self.dirs.get(parent)
        if found is None:
            real = _inside(self.rootfs, parent, self.where)
            # Layers need not list parent directories; every link on the way is already
            # resolved inside the tree by _inside, so creating the rest cannot leave it.
            real.mkdir(parents=True, exist_ok=True)
            found = self.dirs[parent] = str(real)
        return found

    def _removed(self, path: str) -> None:
        """Something at ``path`` is replaced: forget resolutions that may have used it."""
        _remove(Path(path))
        self.dirs = {"": str(self.rootfs)}

    def _owner(self, target: str, member: tarfile.TarInfo, fd: int | None = None) -> None:
        if self.owner_is_ours and (member.uid, member.gid) == (self.uid, self.gid):
            return
        if fd is not None:
            os.fchown(fd, member.uid, member.gid)
        else:
            os.chown(target, member.uid, member.gid, follow_symlinks=False)

    def member(self, member: tarfile.TarInfo, copy: Callable[[int], None]) -> None:
        """Apply ``member``; ``copy(fd)`` writes its data (regular files)."""
        name = os.path.normpath(member.name.lstrip("/"))
        if name in (".", ""):
            return
        if name == ".." or name.startswith("../"):
            raise InputError(f"{self.where}: member {member.name!r} leaves the root")
        parent, base = os.path.split(name)
        real_parent = self._parent(parent)
        if base == _OPAQUE:
            _clear_lower(Path(real_parent), parent, self.written)
            self.dirs = {"": str(self.rootfs)}
            return
        if base.startswith(_WHITEOUT):
            hidden = base[len(_WHITEOUT):]
            if hidden in ("", ".", ".."):  # ".wh..." would remove the parent of rootfs
                raise InputError(f"{self.where}: member {member.name!r} is not a whiteout "
                                 "of an entry")
            self._removed(os.path.join(real_parent, hidden))
            return
        if not (0 <= member.uid < _NO_ID and 0 <= member.gid < _NO_ID):
            raise InputError(f"{self.where}: member {member.name!r} has owner "
                             f"{member.uid}:{member.gid}")
        target = os.path.join(real_parent, base)
        mode = member.mode & 0o1777  # no setuid/setgid: pods run with no_new_privs anyway
        if member.isdir():
            self._directory(target, name, mode, member)
        elif member.isreg():
            self._file(member, target, mode, copy)
        elif member.issym():
            self._create(target, lambda: os.symlink(member.linkname, target))
            self._owner(target, member)
        elif member.islnk():
            link = os.path.normpath(member.linkname.lstrip("/"))
            source_path = _inside(self.rootfs, link, self.where)
            self._create(target, lambda: os.link(source_path, target, follow_symlinks=False))
            self._owner(target, member)
        else:
            raise InputError(f"{self.where}: member {member.name!r} is a device or FIFO")
        self.written.add(name)

    def _create(self, target: str, make: Any) -> Any:
        """``make()``, after removing what a lower layer (or an earlier member) left there."""
        try:
            return make()
        except FileExistsError:
            self._removed(target)
            return make()

    def _directory(self, target: str, name: str, mode: int,
                   member: tarfile.TarInfo) -> None:
        try:
            os.mkdir(target, mode)
            fresh = True
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                self._removed(target)
                os.mkdir(target, mode)
            fresh = False
        if not fresh or mode & self.umask or mode & 0o1000:
            os.chmod(target, mode)
        self._owner(target, member)
        self.dirs[name] = target

    def _file(self, member: tarfile.TarInfo, target: str, mode: int,
              copy: Callable[[int], None]) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = self._create(target, lambda: os.open(target, flags, mode))
        try:
            if mode & self.umask or mode & 0o1000:
                os.fchmod(fd, mode)
            self._owner(target, member, fd)
            copy(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """This process's umask, read without setting it (``os.umask`` would change it for
    every thread for a moment); 0o777 (every mode set explicitly) if it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


def _inside(rootfs: Path, rel: str, where: str) -> Path:
    """``rel`` resolved inside ``rootfs``: symlinks on the way are followed as if
    ``rootfs`` were ``/`` (securejoin), so no link can lead a member out of the tree.

    A link's target is spliced in front of what is left of the path (so a ``..`` after it
    is the parent of where it led, as the kernel has it), and at most ``_MAX_LINKS`` links
    are followed in all: counting only nested links let ``l1 -> l0/l0``, ``l2 -> l1/l1``...
    cost 2**depth lookups."""
    current = rootfs
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    parts.reverse()  # a stack: the next component last
    links = 0
    while parts:
        part = parts.pop()
        if part == "..":
            current = current.parent if current != rootfs else rootfs
            continue
        step = current / part
        if step.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                raise InputError(f"{where}: too many symbolic links at {rel!r}")
            link = os.readlink(step)
            if link.startswith("/"):
                current = rootfs
            parts.extend(reversed([p for p in link.split("/") if p not in ("", ".")]))
            continue
        current = step
    return current


class _Inflater(io.RawIOBase):
    """A layer blob read as an uncompressed stream, inflated by a second thread."""

    def __init__(self, path: Path, compression: str) -> None:
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
        self._buffer = memoryview(b"")
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path, compression),
                                        daemon=True)
        self._thread.start()

    def _run(self, path: Path, compression: str) -> None:
        try:
            with open_layer(path, compression) as source:
                while not self._stop.is_set():
                    chunk = source.read(4 << 20)
                    if not chunk:
                        break
                    self._queue.put(chunk)
            self._queue.put(None)
        except BaseException as exc:  # handed to the reader
            self._queue.put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buffer and not self._done:
            item = self._queue.get()
            if item is None:
                self._done = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self._buffer = memoryview(item)
        size = min(len(buffer), len(self._buffer))
        buffer[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        super().close()

    def __enter__(self) -> io.BufferedReader[_Inflater]:  # type: ignore[override]
        self._reader = io.BufferedReader(self, 1 << 20)
        return self._reader

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clear_lower(directory: Path, rel: str, written: set[str]) -> None:
    """An opaque whiteout: what lower layers put in ``directory`` is gone."""
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if os.path.join(rel, child.name) not in written:
            _remove(child)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


__all__ = ["PYCACHE_MOUNT", "ImageCache", "UnpackedImage", "require_digest"]
