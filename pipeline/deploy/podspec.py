"""A pod template's container as a bubblewrap command line, as a kubelet would run it.

Why here and not in the supervisor: this is the part that decides what the process may
see (uid/gid, read-only root, mounts, environment, argv), so it is pure and tested on its
own. Kubernetes semantics kept: ``command`` replaces the image's Entrypoint, ``args``
replace its Cmd, ``workingDir`` its WorkingDir; pod then container ``securityContext``.
Volume data (ConfigMap, Secret, downward API) is handed to bubblewrap through memfds and
lands on a tmpfs inside the pod: nothing is written to the host's disk for it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, InputError

#: Where files handed in as data come from (memfds the child inherits).
_MODE_DEFAULT = 0o644


@dataclass
class Sources:
    """What volumes and env may refer to: the rendered data and the user's directories."""

    config_maps: Mapping[str, Mapping[str, bytes]]
    secrets: Mapping[str, Mapping[str, bytes]]
    #: ``--secret NAME=DIR``: a Secret's keys are the regular files of DIR.
    secret_dirs: Mapping[str, Path]
    #: ``--volume CLAIM=DIR``: a persistentVolumeClaim served by a host directory.
    claim_dirs: Mapping[str, Path]


@dataclass
class Launch:
    """The argv and the fds it needs; ``close()`` drops the fds once the child has them."""

    argv: list[str]
    fds: list[int] = field(default_factory=list)
    uid: int = 0
    gid: int = 0
    mountpoints: list[str] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name[:200] or "data", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _secret_data(name: str, sources: Sources, where: str) -> dict[str, bytes]:
    if name in sources.secret_dirs:
        directory = sources.secret_dirs[name]
        if not directory.is_dir():
            raise ConfigError(f"{where}: --secret {name}={directory}: not a directory")
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
                if p.is_file() and not p.name.startswith(".")}
    if name in sources.secrets:
        return dict(sources.secrets[name])
    raise ConfigError(f"{where}: secret {name!r} is not given: pass --secret {name}=DIR "
                      "(a directory whose files are the Secret's keys)")


def _items(data: Mapping[str, bytes], volume: Mapping[str, Any], where: str,
           kind: str, name: str) -> list[tuple[str, bytes, int | None]]:
    """(relative path, content, mode) per file, as ``items`` select them."""
    items = volume.get("items")
    if not items:
        return [(key, value, None) for key, value in data.items()]
    files = []
    for item in items:
        key = item.get("key")
        if key not in data:
            raise ConfigError(f"{where}: {kind} {name!r} has no key {key!r}")
        files.append((item.get("path") or key, data[key], item.get("mode")))
    return files


def _safe_rel(path: str, where: str) -> str:
    norm = os.path.normpath(path)
    if norm.startswith(("/", "..")) or norm == ".":
        raise InputError(f"{where}: volume file path {path!r} leaves its volume")
    return norm


def _downward(volume: Mapping[str, Any], metadata: Mapping[str, Any],
              where: str) -> list[tuple[str, bytes, int | None]]:
    files = []
    for item in volume.get("items") or []:
        field_path = (item.get("fieldRef") or {}).get("fieldPath", "")
        if field_path in ("metadata.labels", "metadata.annotations"):
            values = metadata.get(field_path.split(".", 1)[1]) or {}
            text = "".join(f'{k}="{v}"\n' for k, v in sorted(values.items()))
        elif field_path in ("metadata.name", "metadata.namespace", "metadata.uid"):
            text = str(metadata.get(field_path.split(".", 1)[1], ""))
        else:
            raise InputError(f"{where}: downwardAPI field {field_path!r} is not served "
                             "locally (metadata.labels, .annotations, .name, .namespace)")
        files.append((item["path"], text.encode(), item.get("mode")))
    return files


def _env(container: Mapping[str, Any], image_env: list[str], metadata: Mapping[str, Any],
         sources: Sources, where: str) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in image_env if "=" in item)
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = str(item.get("value", ""))
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath", "")
            values = {"metadata.name": metadata.get("name"),
                      "metadata.namespace": metadata.get("namespace"),
                      "status.podIP": "127.0.0.1", "spec.nodeName": "localhost"}
            if path not in values:
                raise InputError(f"{where}: env {name}: fieldPath {path!r} not served locally")
            env[name] = str(values[path])
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            ref = source.get("configMapKeyRef") or source.get("secretKeyRef")
            if "configMapKeyRef" in source:
                data = sources.config_maps.get(ref["name"])
                if data is None:
                    raise ConfigError(f"{where}: env {name}: ConfigMap {ref['name']!r} not "
                                      "rendered")
            else:
                data = _secret_data(ref["name"], sources, where)
            if ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"{where}: env {name}: no key {ref.get('key')!r} in "
                                  f"{ref['name']!r}")
            env[name] = data[ref["key"]].decode()
        else:
            raise InputError(f"{where}: env {name}: {sorted(source)} not served locally")
    return env


def _identity(pod_spec: Mapping[str, Any], container: Mapping[str, Any],
              image_user: str, where: str) -> tuple[int, int]:
    pod_sc = pod_spec.get("securityContext") or {}
    sc = {**pod_sc, **(container.get("securityContext") or {})}
    user, _, group = (image_user or "0").partition(":")
    if not user.isdigit() or (group and not group.isdigit()):
        if "runAsUser" not in sc:
            raise InputError(f"{where}: image user {image_user!r} is not numeric; set "
                             "securityContext.runAsUser")
    uid = int(sc.get("runAsUser", user if user.isdigit() else 0))
    gid = int(sc.get("runAsGroup", group if group.isdigit() else uid))
    if uid == 0:
        raise InputError(f"{where}: runs as root (uid 0); local pods run as a non-root uid "
                         "(securityContext.runAsUser)")
    if sc.get("readOnlyRootFilesystem") is not True:
        raise InputError(f"{where}: readOnlyRootFilesystem is not true; local pods run on "
                         "the shared, cached image tree, read-only")
    if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is True:
        raise InputError(f"{where}: privileged or allowPrivilegeEscalation is not run locally")
    caps = sc.get("capabilities") or {}
    if caps.get("add"):
        raise InputError(f"{where}: capabilities.add {caps['add']} is not granted locally")
    return uid, gid


def build_launch(
    pod_name: str,
    metadata: Mapping[str, Any],
    pod_spec: Mapping[str, Any],
    image_config: Mapping[str, Any],
    rootfs: Path,
    sources: Sources,
    bytecode: Path | None = None,
) -> Launch:
    """The setpriv + bubblewrap argv that runs the pod's only container.

    Raises ConfigError (a missing --secret, --volume) or InputError (what cannot be run
    locally) naming the pod; the caller reports it and keeps the other pods running.
    """
    where = f"pod {metadata.get('namespace', 'default')}/{pod_name}"
    if pod_spec.get("initContainers"):
        raise InputError(f"{where}: initContainers are not run locally")
    containers = pod_spec.get("containers") or []
    if len(containers) != 1:
        raise InputError(f"{where}: {len(containers)} containers; local pods run exactly one")
    container = containers[0]
    where = f"{where} container {container.get('name')}"
    uid, gid = _identity(pod_spec, container, str(image_config.get("User") or ""), where)
    env = _env(container, list(image_config.get("Env") or []), metadata, sources, where)
    entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(image_config.get("Cmd") or [])
    if "command" in container:
        argv = [*container["command"], *(container.get("args") or [])]
    else:
        argv = [*entrypoint, *(container.get("args") if "args" in container else cmd)]
    if not argv:
        raise InputError(f"{where}: neither the container nor the image says what to run")
    workdir = container.get("workingDir") or image_config.get("WorkingDir") or "/"
    for required in ("proc", "dev", "tmp"):
        (rootfs / required).mkdir(exist_ok=True)

    launch = Launch([], uid=uid, gid=gid)
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY)
        launch.fds.append(root_fd)
        args = ["--ro-bind-fd", str(root_fd), "/", "--proc", "/proc", "--dev", "/dev"]
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            args += _mount(mount, volumes, metadata, sources, rootfs, launch, where)
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
        if bytecode is not None:
            from pipeline.deploy.image import PYCACHE_MOUNT

            # The image's own modules, compiled once per digest (ImageCache.compile_bytecode).
            pyc_fd = os.open(bytecode, os.O_PATH | os.O_DIRECTORY)
            launch.fds.append(pyc_fd)
            args += ["--ro-bind-fd", str(pyc_fd), PYCACHE_MOUNT]
            env.setdefault("PYTHONPYCACHEPREFIX", PYCACHE_MOUNT)
        env_args = [a for k, v in env.items() for a in ("--setenv", k, v)]
        launch.argv = [
            setpriv, "--reuid", str(uid), "--regid", str(gid), "--clear-groups",
            bwrap, *args,
            "--unshare-user", "--uid", str(uid), "--gid", str(gid),
            "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts",
            "--unshare-net", "--hostname", pod_name[:63], "--die-with-parent",
            "--cap-drop", "ALL", "--clearenv", *env_args, "--chdir", workdir, "--", *argv,
        ]
        return launch
    except BaseException:
        launch.close()
        raise


def _mount(mount: Mapping[str, Any], volumes: Mapping[str, Any], metadata: Mapping[str, Any],
           sources: Sources, rootfs: Path, launch: Launch, where: str) -> list[str]:
    name = mount.get("name")
    path = mount.get("mountPath", "")
    if not path.startswith("/") or ".." in path.split("/"):
        raise InputError(f"{where}: mountPath {path!r} must be absolute, without '..'")
    if mount.get("subPath") or mount.get("subPathExpr"):
        raise InputError(f"{where}: volumeMount {name!r}: subPath is not run locally")
    volume = volumes.get(name)
    if volume is None:
        raise InputError(f"{where}: volumeMount {name!r} names no volume of the pod")
    # A mountpoint must exist before the root is read-only (as runc creates it).
    (rootfs / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    read_only = bool(mount.get("readOnly"))
    if "emptyDir" in volume:
        size = _quantity((volume["emptyDir"] or {}).get("sizeLimit"))
        return [*(["--size", str(size)] if size else []), "--perms", "1777", "--tmpfs", path]
    if "persistentVolumeClaim" in volume:
        claim = volume["persistentVolumeClaim"].get("claimName")
        directory = sources.claim_dirs.get(claim)
        if directory is None:
            raise ConfigError(f"{where}: persistentVolumeClaim {claim!r} is not given: pass "
                              f"--volume {claim}=DIR")
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
        launch.fds.append(fd)
        ro = read_only or volume["persistentVolumeClaim"].get("readOnly")
        return ["--ro-bind-fd" if ro else "--bind-fd", str(fd), path]
    if "configMap" in volume:
        source = volume["configMap"]
        data = sources.config_maps.get(source.get("name"))
        if data is None:
            if source.get("optional"):
                return ["--tmpfs", path, "--remount-ro", path]
            raise ConfigError(f"{where}: ConfigMap {source.get('name')!r} (volume {name!r}) "
                              "is not rendered by the chart")
        files = _items(data, source, where, "ConfigMap", source.get("name"))
        mode = source.get("defaultMode", _MODE_DEFAULT)
    elif "secret" in volume:
        source = volume["secret"]
        try:
            data = _secret_data(source.get("secretName"), sources, where)
        except ConfigError:
            if source.get("optional"):
                return ["--tmpfs", path, "--remount-ro", path]
            raise
        files = _items(data, source, where, "secret", source.get("secretName"))
        mode = source.get("defaultMode", _MODE_DEFAULT)
        # The kubelet writes root:fsGroup files; root is not mapped in the pod's user
        # namespace, so the file is the pod user's own: its group bits move to the owner
        # and nobody else gets any (the same readers: the pod's processes only).
        files = [(rel, content, _owner_only(item if item is not None else mode))
                 for rel, content, item in files]
    elif "downwardAPI" in volume:
        source = volume["downwardAPI"]
        files = _downward(source, metadata, where)
        mode = source.get("defaultMode", _MODE_DEFAULT)
    else:
        kinds = sorted(set(volume) - {"name"})
        raise InputError(f"{where}: volume {name!r} of type {kinds} is not run locally "
                         "(emptyDir, configMap, secret, downwardAPI, persistentVolumeClaim)")
    args = ["--perms", "0755", "--tmpfs", path]
    for rel, content, item_mode in files:
        rel = _safe_rel(rel, where)
        fd = _memfd(rel, content)
        launch.fds.append(fd)
        args += ["--perms", f"{(item_mode if item_mode is not None else mode) & 0o777:04o}",
                 "--ro-bind-data", str(fd), f"{path.rstrip('/')}/{rel}"]
    return [*args, "--remount-ro", path]


def _owner_only(mode: int) -> int:
    return (mode & 0o700) | ((mode & 0o070) << 3)


_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
          "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _quantity(value: Any) -> int | None:
    if value is None:
        return None
    text = str(value)
    for unit, factor in _UNITS.items():
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * factor
    if text.isdigit():
        return int(text)
    raise InputError(f"sizeLimit {value!r} is not a quantity")


__all__ = ["Launch", "Sources", "build_launch"]
