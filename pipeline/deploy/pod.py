"""One local pod: its process under bubblewrap, its probes, its restarts, its relays.

Why a thread per pod: the kubelet's loop per pod (start, probe, restart with backoff) is
sequential and small; a thread keeps each pod's timing independent of the others, so a
pod stuck in a failing probe or a crash loop never delays a healthy one. The process's
output goes to the pod's log in the state directory (appended across restarts); a report
of a failure carries its last lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.deploy import netns
from pipeline.deploy.podspec import Launch

#: The kubelet's crash-loop backoff: 10 s, doubled per restart, at most 5 min.
BACKOFF_BASE = 10.0
BACKOFF_MAX = 300.0


@dataclass
class Probe:
    """A container probe (httpGet or tcpSocket) with the kubelet's defaults."""

    kind: str
    port: int
    path: str
    initial_delay: float
    period: float
    timeout: float
    failure_threshold: int
    success_threshold: int

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None, ports: Mapping[str, int],
              where: str) -> Probe | None:
        if not spec:
            return None
        if "httpGet" in spec:
            kind, action = "http", spec["httpGet"]
            if action.get("host") or str(action.get("scheme", "HTTP")).upper() != "HTTP":
                raise ValueError(f"{where}: httpGet probe with host or HTTPS is not run "
                                 "locally")
        elif "tcpSocket" in spec:
            kind, action = "tcp", spec["tcpSocket"]
        else:
            raise ValueError(f"{where}: probe {sorted(spec)} is not run locally "
                             "(httpGet, tcpSocket)")
        port = action.get("port")
        if isinstance(port, str) and not port.isdigit():
            if port not in ports:
                raise ValueError(f"{where}: probe port {port!r} names no containerPort")
            port = ports[port]
        return cls(kind, int(port), str(action.get("path", "/")),
                   float(spec.get("initialDelaySeconds", 0)), float(spec.get("periodSeconds", 10)),
                   float(spec.get("timeoutSeconds", 1)), int(spec.get("failureThreshold", 3)),
                   int(spec.get("successThreshold", 1)))

    def check(self, namespace_path: str) -> str | None:
        """None when the probe passes, else why not."""
        try:
            if self.kind == "tcp":
                netns.connect(namespace_path, self.port, self.timeout).close()
                return None
            status = netns.http_get(namespace_path, self.port, self.path, self.timeout)
            return None if 200 <= status < 400 else f"HTTP probe failed with statuscode: {status}"
        except OSError as exc:
            return f"{self.kind} probe on port {self.port}: {exc}"


class Pod:
    """A replica: started by :meth:`start`, supervised by its own thread until :meth:`stop`."""

    def __init__(self, name: str, namespace: str, pod_set: str, labels: Mapping[str, str],
                 ports: Mapping[str, int], probes: Mapping[str, Probe | None],
                 launch: Callable[[], Launch], state_dir: Path,
                 events: Callable[[Pod, str], None], backoff_base: float = BACKOFF_BASE,
                 image: str = "", egress_ports: tuple[int, ...] = ()) -> None:
        self.name, self.namespace, self.pod_set = name, namespace, pod_set
        self.labels = dict(labels)
        self.ports = dict(ports)
        self.image = image
        self.probes = probes
        self._launch = launch
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "log"
        self._events = events
        self.backoff_base = backoff_base
        self.phase = "Pending"
        self.ready = False
        self.restarts = 0
        self.last_error: str | None = None
        self.relays: dict[int, netns.Relay] = {}
        self.egress_ports = egress_ports
        self._egress: list[netns.Egress] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._child_pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"pod-{name}")

    # -- public ------------------------------------------------------------------------
    def start(self) -> Pod:
        self._thread.start()
        return self

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` (terminationGracePeriodSeconds)."""
        self._stop.set()
        self._terminate(grace)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(grace + 10)
        for relay in self.relays.values():
            relay.close()
        for egress in self._egress:
            egress.close()
        self.ready = False
        self.phase = "Terminated"

    def address(self, port: int) -> str | None:
        """The host 127.0.0.1:PORT relayed to ``port`` inside the pod (None before start)."""
        relay = self.relays.get(port)
        return relay.address if relay else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def netns_path(self) -> str | None:
        return f"/proc/{self._child_pid}/ns/net" if self._child_pid else None

    # -- supervision -------------------------------------------------------------------
    def _set(self, phase: str, ready: bool, message: str | None = None) -> None:
        changed = (phase, ready) != (self.phase, self.ready)
        self.phase, self.ready = phase, ready
        if message is not None:
            self.last_error = message
        if changed or message:
            self._events(self, message or "")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                launch = self._launch()
            except Exception as exc:  # a pod that cannot be built fails alone
                self._set("Failed", False, str(exc))
                return
            started = self._spawn(launch)
            if started is not None:
                self._set("Failed", False, started)
                return
            reason = self._supervise()
            if self._stop.is_set():
                return
            self.restarts += 1
            delay = min(BACKOFF_MAX, self.backoff_base * 2 ** (self.restarts - 1))
            self._set("CrashLoopBackOff", False,
                      f"{reason}; restart {self.restarts} in {delay:g}s; last log lines:\n"
                      f"{self.log_tail(10)}")
            if self._stop.wait(delay):
                return

    def _spawn(self, launch: Launch) -> str | None:
        info_r, info_w = os.pipe()
        # bwrap waits on block-fd before it runs the container: the egress listeners
        # exist inside the namespace before the process could try to use them.
        block_r, block_w = os.pipe()
        try:
            argv = list(launch.argv)
            bwrap = next(i for i, a in enumerate(argv) if a.endswith("bwrap"))
            argv[bwrap + 1:bwrap + 1] = ["--info-fd", str(info_w), "--block-fd", str(block_r)]
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=[*launch.fds, info_w, block_r], cwd="/",
                    env={"PATH": "/usr/bin:/bin"}, start_new_session=True)
        except OSError as exc:
            os.close(info_r)
            os.close(block_w)
            return f"cannot start: {exc}"
        finally:
            os.close(info_w)
            os.close(block_r)
            launch.close()
        with os.fdopen(info_r, "rb") as info:
            raw = info.read()
        try:
            self._child_pid = int(json.loads(raw)["child-pid"])
        except (ValueError, KeyError):
            os.close(block_w)
            self._process.wait()
            self._child_pid = None
            return None  # exited during setup: the supervisor reports it with the log
        try:
            for egress in self._egress:
                egress.close()
            self._egress = [netns.Egress(self.netns_path or "", p) for p in self.egress_ports]
        except OSError as exc:
            os.close(block_w)
            self._terminate(1.0)
            return f"cannot relay host ports {list(self.egress_ports)} into the pod: {exc}"
        with contextlib.suppress(OSError):
            os.write(block_w, b"1")
        os.close(block_w)
        for port in self.ports.values():
            if port in self.relays:
                self.relays[port].netns = self.netns_path or ""
            else:
                self.relays[port] = netns.Relay(self.netns_path or "", port)
        self._set("Running", False)
        return None

    def _supervise(self) -> str:
        """Probe until the process exits or liveness fails; returns why it ended."""
        process = self._process
        assert process is not None
        if self._child_pid is None:
            code = process.wait()
            return f"exited during sandbox setup with code {code}"
        start = time.monotonic()
        startup = self.probes.get("startup")
        readiness = self.probes.get("readiness")
        started = startup is None
        due = {kind: start + p.initial_delay for kind, p in self.probes.items() if p}
        fails: dict[str, int] = {kind: 0 for kind in due}
        oks: dict[str, int] = {kind: 0 for kind in due}
        if readiness is None and started:
            self._set("Running", True)
        while not self._stop.is_set():
            active = [k for k in due if (k == "startup") != started]
            wait = max(0.0, min((due[k] for k in active), default=time.monotonic() + 1.0)
                       - time.monotonic())
            try:
                code = process.wait(timeout=wait)
                return f"container exited with code {code}"
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            for kind in active:
                if due[kind] > now:
                    continue
                probe = self.probes[kind]
                assert probe is not None
                due[kind] = now + probe.period
                why = probe.check(self.netns_path or "")
                if why is None:
                    fails[kind], oks[kind] = 0, oks[kind] + 1
                else:
                    fails[kind], oks[kind] = fails[kind] + 1, 0
                if kind == "startup":
                    if why is None:
                        started = True
                        for other in ("readiness", "liveness"):
                            if other in due:
                                due[other] = now
                        if readiness is None:
                            self._set("Running", True)
                    elif fails[kind] >= probe.failure_threshold:
                        self._terminate(5.0)
                        return (f"startup probe failed {fails[kind]} times ({why})")
                elif kind == "readiness":
                    if why is None and oks[kind] >= probe.success_threshold and not self.ready:
                        self._set("Running", True)
                    elif why is not None and fails[kind] >= probe.failure_threshold \
                            and (self.ready or fails[kind] == probe.failure_threshold):
                        self._set("Running", False,
                                  f"not ready: readiness probe failed {fails[kind]} times "
                                  f"({why}); last log lines:\n{self.log_tail(10)}")
                elif kind == "liveness" and why is not None \
                        and fails[kind] >= probe.failure_threshold:
                    self._terminate(5.0)
                    return f"liveness probe failed {fails[kind]} times ({why})"
        return "stopped"

    def _terminate(self, grace: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        # The container's PID 1 gets SIGTERM, as the kubelet sends it; bwrap follows it.
        target = self._child_pid
        try:
            if target:
                os.kill(target, signal.SIGTERM)
            else:
                process.terminate()
        except ProcessLookupError:
            pass
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


__all__ = ["BACKOFF_BASE", "BACKOFF_MAX", "Pod", "Probe"]
