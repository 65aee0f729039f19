"""LocalCluster: the rendered manifests of a chart run on this machine.

The public seam of local deploys. ``pipeline deploy --local`` applies a chart and waits;
promotion's local canary drives the same object: :meth:`LocalCluster.start_pod_set` runs
a workload's template from another image (the canary), :meth:`LocalCluster.set_weights`
splits a Service between pod sets (nginx weights, reloaded), :meth:`LocalCluster.service_url`
and :attr:`LocalCluster.prometheus_url` are where traffic and the analysis go, and
:meth:`LocalCluster.close` stops everything it started. Everything it writes is under
``state_dir``: the image cache (``images/``, reused across runs: unpacked once per
digest) and this run's pods, nginx and Prometheus (``run/``, removed at close).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.deploy.image import ImageCache, UnpackedImage, require_digest
from pipeline.deploy.objects import Plan, object_name, plan, selects
from pipeline.deploy.pod import BACKOFF_BASE, Pod, Probe
from pipeline.deploy.podspec import Sources, build_launch
from pipeline.deploy.reach import check_pod_reachable
from pipeline.deploy.services import Monitoring, ServiceProxy, Upstream, reserve_port
from pipeline.errors import InputError, PipelineError, PolicyError
from pipeline.oci.registry import RegistryOptions

#: ``(image reference, namespace)`` -> None, or raises PolicyError (the image policy).
ImageCheck = Callable[[str, str], None]


@dataclass(frozen=True)
class Event:
    """Something to tell the user: a pod's state, a Service that serves, an error."""

    kind: str  # "pod", "service", "error", "note"
    subject: str
    message: str
    exit_code: int = 0


@dataclass
class PodSet:
    """The replicas of one workload (or of a canary of it), with one image."""

    name: str
    workload: str
    namespace: str
    image: str
    pods: list[Pod]


_LOOPBACK = re.compile(r"(?:^|[/@\s=])(?:127\.0\.0\.1|localhost):(\d{1,5})(?=[/\s]|$)")


def loopback_ports(container: Mapping[str, Any]) -> tuple[int, ...]:
    """Host loopback ports a container names in its args and env (``127.0.0.1:5000/repo``:
    a registry on this machine), relayed into its namespace so it can reach them."""
    texts = [*(container.get("args") or []), *(container.get("command") or []),
             *(str(e.get("value", "")) for e in container.get("env") or [])]
    ports = {int(m) for text in texts for m in _LOOPBACK.findall(str(text))}
    return tuple(sorted(p for p in ports if 0 < p < 65536))


class LocalCluster:
    """Run rendered objects locally; see the module docstring for the promotion seam."""

    def __init__(
        self,
        state_dir: Path,
        *,
        registry_options: RegistryOptions | None = None,
        secret_dirs: Mapping[str, Path] | None = None,
        claim_dirs: Mapping[str, Path] | None = None,
        image_check: ImageCheck | None = None,
        service_ports: Mapping[str, int] | None = None,
        on_event: Callable[[Event], None] | None = None,
        backoff_base: float = BACKOFF_BASE,
        use_bytecode: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        check_pod_reachable(self.state_dir, "the state directory")
        for claim, directory in (claim_dirs or {}).items():
            check_pod_reachable(Path(directory), f"--volume {claim}")
        self.images = ImageCache(self.state_dir / "images", registry_options)
        # One directory per run: two deploys may share the image cache, never their pods.
        (self.state_dir / "run").mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.state_dir / "run"))
        self.secret_dirs = {k: Path(v) for k, v in (secret_dirs or {}).items()}
        self.claim_dirs = {k: Path(v) for k, v in (claim_dirs or {}).items()}
        self.image_check = image_check
        self.service_ports = dict(service_ports or {})
        self.backoff_base = backoff_base
        self.use_bytecode = use_bytecode
        self._on_event = on_event or (lambda _e: None)
        self._lock = threading.RLock()
        self.plan: Plan | None = None
        self.pod_sets: dict[str, PodSet] = {}
        self.weights: dict[str, dict[str, int]] = {}
        self.events: list[Event] = []
        self.proxy: ServiceProxy | None = None
        self.monitoring: Monitoring | None = None
        self._monitors: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self._served: set[str] = set()
        self._closed = False

    # -- events ------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        self.events.append(event)
        self._on_event(event)

    def errors(self) -> list[Event]:
        return [e for e in self.events if e.kind == "error"]

    # -- applying ----------------------------------------------------------------------
    def apply(self, objects: Iterable[Mapping[str, Any]], namespace: str = "default") -> None:
        """Start what ``objects`` ask for; returns at once (pods become ready later).

        InputError for a kind it does not know (nothing is started then). A workload
        whose pods cannot start (no digest, missing --secret, a refused image) is
        reported as an error event; the others run.
        """
        self.plan = plan(objects, namespace)
        for name in self.plan.not_applied:
            self._emit(Event("note", name, "not applied locally"))
        # nginx and Prometheus start while the images are pulled and unpacked.
        self.proxy = ServiceProxy(self.run_dir / "nginx")
        for service in self.plan.services:
            self._add_service(service)
        proxy_thread = threading.Thread(target=self._apply_proxy, daemon=True)
        proxy_thread.start()
        if self.plan.service_monitors:
            self.monitoring = Monitoring(self.run_dir / "prometheus")
            for monitor in self.plan.service_monitors:
                self._add_monitor(monitor)
            self.monitoring.start()
        starters = [threading.Thread(target=self._start_workload, args=(w,), daemon=True)
                    for w in self.plan.workloads]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        proxy_thread.join()

    def _apply_proxy(self) -> None:
        try:
            with self._lock:
                assert self.proxy is not None
                self.proxy.apply()
        except PipelineError as exc:
            self._emit(Event("error", "nginx", str(exc), exc.exit_code))

    def _add_service(self, service: Mapping[str, Any]) -> None:
        assert self.proxy is not None
        meta = service["metadata"]
        name, namespace = meta["name"], meta.get("namespace") or "default"
        for port in (service.get("spec") or {}).get("ports") or []:
            port_name = str(port.get("name") or port.get("port"))
            app = str(port.get("appProtocol") or "")
            if app not in ("", "http") and not port_name.startswith("http"):
                self._emit(Event("note", f"Service/{namespace}/{name} port {port_name}",
                                 f"not served locally (appProtocol {app or 'tcp'}: nginx-light "
                                 "proxies HTTP only)"))
                continue
            wanted = self.service_ports.get(f"{name}:{port_name}",
                                            self.service_ports.get(name, 0))
            try:
                listen = reserve_port(wanted, f"port {port_name}")
            except PipelineError as exc:
                self._emit(Event("error", f"Service/{namespace}/{name}", str(exc),
                                 exc.exit_code))
                continue
            self.proxy.add(Upstream(name, namespace, port_name, listen))

    def _add_monitor(self, monitor: Mapping[str, Any]) -> None:
        assert self.monitoring is not None
        meta = monitor["metadata"]
        namespace = meta.get("namespace") or "default"
        for index, endpoint in enumerate((monitor.get("spec") or {}).get("endpoints") or []):
            job = f"serviceMonitor/{namespace}/{meta['name']}/{index}"
            self.monitoring.add_job(job, str(endpoint.get("interval", "30s")),
                                    str(endpoint.get("scrapeTimeout", "10s")),
                                    str(endpoint.get("path", "/metrics")))
            self._monitors.append((job, dict(monitor), dict(endpoint)))

    def _start_workload(self, workload: Mapping[str, Any]) -> None:
        spec = workload.get("spec") or {}
        replicas = spec.get("replicas", 1)
        meta = workload["metadata"]
        self.start_pod_set(meta["name"], workload, replicas=int(replicas))

    def start_pod_set(self, name: str, workload: Mapping[str, Any] | str, *,
                      image: str | None = None, replicas: int | None = None) -> PodSet | None:
        """Start ``replicas`` pods of ``workload``'s template (a workload or its name),
        optionally from another ``image`` (REPO@sha256:..., a canary). Returns None when
        the pods cannot start; the error event names the workload."""
        if isinstance(workload, str):
            assert self.plan is not None
            found = [w for w in self.plan.workloads if w["metadata"]["name"] == workload]
            if not found:
                raise InputError(f"no workload {workload!r} in the applied chart")
            workload = found[0]
        meta = workload["metadata"]
        namespace = meta.get("namespace") or "default"
        subject = object_name(workload)
        template = json.loads(json.dumps(workload["spec"]["template"]))
        pod_spec = template.get("spec") or {}
        containers = pod_spec.get("containers") or []
        try:
            if image is not None and containers:
                containers[0]["image"] = image
            if not containers:
                raise InputError(f"{subject}: the pod template has no containers")
            ref = containers[0].get("image", "")
            require_digest(ref)
            if self.image_check is not None:
                self.image_check(ref, namespace)
            unpacked = self.images.get(ref)
        except PipelineError as exc:
            self._emit(Event("error", subject, str(exc), exc.exit_code))
            return None
        count = replicas if replicas is not None else int(workload["spec"].get("replicas", 1))
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()
                                       ).hexdigest()[:10]
        pods = []
        for index in range(count):
            try:
                pods.append(self._pod(name, namespace, template, template_hash, index,
                                      unpacked, subject))
            except (PipelineError, ValueError) as exc:
                self._emit(Event("error", subject, str(exc),
                                 getattr(exc, "exit_code", InputError.exit_code)))
                return None
        if self.use_bytecode and unpacked.ships_bytecode and not unpacked.cached:
            self._emit(Event("note", subject, f"{unpacked.digest} ships its bytecode: "
                                              "nothing to compile"))
        elif self.use_bytecode and self.images.bytecode(unpacked) is None:
            # After this start, for the next ones: never in the way of this one.
            threading.Thread(target=self._compile, args=(unpacked, subject),
                             daemon=True).start()
        pod_set = PodSet(name, meta["name"], namespace, ref, pods)
        with self._lock:
            self.pod_sets[name] = pod_set
        for pod in pods:
            pod.start()
        self._emit(Event("note", subject, f"{count} pod(s) from {unpacked.reference}"
                         f"{' (cached image)' if unpacked.cached else ''}"))
        return pod_set

    def _compile(self, unpacked: UnpackedImage, subject: str) -> None:
        if self.images.compile_bytecode(unpacked) is not None and not self._closed:
            self._emit(Event("note", subject, f"bytecode of {unpacked.digest} compiled for "
                                              "the next starts"))

    def _pod(self, set_name: str, namespace: str, template: Mapping[str, Any],
             template_hash: str, index: int, unpacked: UnpackedImage, subject: str) -> Pod:
        pod_name = f"{set_name}-{template_hash}-{index}"
        tmeta = template.get("metadata") or {}
        labels = {**(tmeta.get("labels") or {}), "pod-template-hash": template_hash}
        metadata = {"name": pod_name, "namespace": namespace, "labels": labels,
                    "annotations": dict(tmeta.get("annotations") or {})}
        pod_spec = template.get("spec") or {}
        container = (pod_spec.get("containers") or [{}])[0]
        ports = {str(p.get("name") or p["containerPort"]): int(p["containerPort"])
                 for p in container.get("ports") or []}
        where = f"pod {namespace}/{pod_name}"
        probes = {kind: Probe.parse(container.get(f"{kind}Probe"), ports, where)
                  for kind in ("startup", "readiness", "liveness")}
        plan_ = self.plan or Plan(namespace)
        sources = Sources(plan_.config_maps, plan_.secrets, self.secret_dirs, self.claim_dirs)
        # Built once now so a missing --secret is reported before anything runs.
        build_launch(pod_name, metadata, pod_spec, unpacked.config, unpacked.rootfs,
                     sources).close()
        bytecode = self.images.bytecode(unpacked) if self.use_bytecode else None

        def launch() -> Any:
            return build_launch(pod_name, metadata, pod_spec, unpacked.config,
                                unpacked.rootfs, sources, bytecode)

        return Pod(pod_name, namespace, set_name, labels, ports,
                   {k: v for k, v in probes.items() if v}, launch,
                   self.run_dir / "pods" / pod_name, self._pod_event, self.backoff_base,
                   unpacked.reference, loopback_ports(container))

    # -- state changes -------------------------------------------------------------------
    def _pod_event(self, pod: Pod, message: str) -> None:
        state = "Ready" if pod.ready else pod.phase
        kind = "error" if pod.phase in ("Failed", "CrashLoopBackOff") or (
            message and not pod.ready and pod.phase == "Running") else "pod"
        text = f"{state} (restarts {pod.restarts})" + (f": {message}" if message else "")
        self._emit(Event(kind, f"pod {pod.namespace}/{pod.name}", text,
                         InputError.exit_code if pod.phase == "Failed" else 0))
        self.refresh()

    def _pods(self) -> list[Pod]:
        return [pod for s in self.pod_sets.values() for pod in s.pods]

    def refresh(self) -> None:
        """Rewrite upstreams and scrape targets from the pods' readiness."""
        with self._lock:
            if self._closed or self.plan is None:
                return
            changed = False
            if self.proxy is not None:
                for service in self.plan.services:
                    changed |= self._refresh_service(service)
                if changed and self.proxy.process is not None:
                    try:
                        self.proxy.apply()
                    except PipelineError as exc:
                        self._emit(Event("error", "nginx", str(exc), exc.exit_code))
                        return
                self._announce()
            if self.monitoring is not None:
                self._refresh_targets()

    def _target_port(self, service: Mapping[str, Any], port_name: str, pod: Pod) -> int | None:
        for port in (service.get("spec") or {}).get("ports") or []:
            if str(port.get("name") or port.get("port")) == port_name:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str) and not target.isdigit():
                    return pod.ports.get(target)
                return int(target)
        return None

    def _refresh_service(self, service: Mapping[str, Any]) -> bool:
        assert self.proxy is not None
        meta = service["metadata"]
        name, namespace = meta["name"], meta.get("namespace") or "default"
        selector = (service.get("spec") or {}).get("selector") or {}
        weights = self.weights.get(name)
        changed = False
        for (ns, svc, port_name), up in self.proxy.upstreams.items():
            if (ns, svc) != (namespace, name):
                continue
            servers: list[tuple[str, int]] = []
            for pod_set in self.pod_sets.values():
                members = [p for p in pod_set.pods if p.ready and selects(selector, p.labels)]
                share = 100 if weights is None else weights.get(pod_set.name, 0)
                for pod in members:
                    port = self._target_port(service, port_name, pod)
                    address = pod.address(port) if port else None
                    if address and share > 0:
                        weight = share if weights is None else max(1, round(share * 100
                                                                            / len(members)))
                        servers.append((address, 1 if weights is None else weight))
            if servers != up.servers:
                up.servers = servers
                changed = True
        return changed

    def _announce(self) -> None:
        assert self.proxy is not None
        for up in self.proxy.upstreams.values():
            key = f"{up.namespace}/{up.service}:{up.port_name}"
            if up.applied and key not in self._served:
                self._served.add(key)
                self._emit(Event("service", f"Service/{up.namespace}/{up.service}",
                                 f"port {up.port_name} serves at {up.url} "
                                 f"({len(up.applied)} ready pod(s))"))

    def _refresh_targets(self) -> None:
        assert self.monitoring is not None and self.plan is not None
        for job, monitor, endpoint in self._monitors:
            selector = ((monitor.get("spec") or {}).get("selector") or {}).get("matchLabels")
            targets = []
            for service in self.plan.services:
                smeta = service["metadata"]
                if not selects(selector, smeta.get("labels") or {}):
                    continue
                svc_selector = (service.get("spec") or {}).get("selector") or {}
                port_name = str(endpoint.get("port"))
                for pod in self._pods():
                    if not pod.ready or not selects(svc_selector, pod.labels):
                        continue
                    port = self._target_port(service, port_name, pod)
                    address = pod.address(port) if port else None
                    if address:
                        targets.append((address, {
                            "namespace": pod.namespace, "service": smeta["name"],
                            "pod": pod.name, "container": "main", "endpoint": port_name,
                            "job": smeta["name"]}))
            self.monitoring.set_targets(job, targets)

    # -- the promotion seam --------------------------------------------------------------
    def set_weights(self, service: str, weights: Mapping[str, int]) -> None:
        """Split ``service`` between pod sets by percent (e.g. ``{"stable": 90, "canary":
        10}``); a set left out gets 0. Returns once nginx serves the new split."""
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise InputError(f"weights for {service}: {dict(weights)} (need >= 0, sum > 0)")
        with self._lock:
            self.weights[service] = dict(weights)
        self.refresh()

    def select_pod_set(self, service: str, pod_set: str) -> None:
        """Narrow ``service``'s selector to the pods of ``pod_set``, as Argo Rollouts
        injects the ReplicaSet's ``pod-template-hash`` into the canary and stable Services:
        without it both Services select both pod sets and their metrics cannot be told
        apart. InputError for an unknown Service or pod set."""
        with self._lock:
            if self.plan is None:
                raise InputError("nothing applied yet")
            found = self.pod_sets.get(pod_set)
            if found is None or not found.pods:
                raise InputError(f"no pod set {pod_set!r} (started: {sorted(self.pod_sets)})")
            template_hash = found.pods[0].labels["pod-template-hash"]
            for index, obj in enumerate(self.plan.services):
                if obj["metadata"]["name"] == service:
                    spec = dict(obj.get("spec") or {})
                    spec["selector"] = {**(spec.get("selector") or {}),
                                        "pod-template-hash": template_hash}
                    self.plan.services[index] = {**obj, "spec": spec}
                    break
            else:
                raise InputError(f"no Service {service!r} in the applied chart")
        self.refresh()

    def stop_pod_set(self, name: str) -> None:
        """Stop every pod of the set ``name`` (e.g. an aborted canary)."""
        with self._lock:
            pod_set = self.pod_sets.pop(name, None)
        if pod_set is not None:
            for pod in pod_set.pods:
                pod.stop(5.0)
            self.refresh()

    def service_url(self, service: str, port: str = "http") -> str:
        """``http://127.0.0.1:PORT`` of a Service port (served by nginx)."""
        if self.proxy is not None:
            for up in self.proxy.upstreams.values():
                if up.service == service and up.port_name == port:
                    return up.url
        raise InputError(f"no Service {service!r} port {port!r} is served locally")

    @property
    def prometheus_url(self) -> str | None:
        return self.monitoring.url if self.monitoring else None

    def ready(self, service: str | None = None) -> bool:
        """True when ``service`` (else every served Service port) has a ready pod."""
        if self.proxy is None:
            return False
        ups = [u for u in self.proxy.upstreams.values() if service in (None, u.service)]
        return bool(ups) and all(u.applied for u in ups)

    def wait_ready(self, service: str | None = None, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready(service):
            if time.monotonic() > deadline:
                from pipeline.errors import UnreachableError

                raise UnreachableError(f"no ready pod behind {service or 'the Services'} "
                                       f"after {timeout:.0f}s")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every pod, nginx and Prometheus; remove this run's files (not the cache)."""
        with self._lock:
            self._closed = True
            pods = self._pods()
        threads = [threading.Thread(target=p.stop, daemon=True) for p in pods]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.proxy is not None:
            self.proxy.stop()
        if self.monitoring is not None:
            self.monitoring.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Event", "ImageCheck", "LocalCluster", "PodSet", "PolicyError"]
