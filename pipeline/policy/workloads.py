"""Which kinds run containers, and where each of their images and model references is.

Why one module: the admission webhook, ``pipeline policy check --verify-images`` and the
promotion gate must verify the same list of images for the same object, and the
webhook's chart must register exactly the kinds judged here (a test compares the two).
A kind missing from :data:`KINDS` is not "no images": the webhook denies it (fail
closed), because an object whose images we cannot find cannot be verified.

Every image is returned as an :class:`ImageSlot` with the JSON pointer of the field
holding it, so the mutating webhook patches exactly the field that was verified. Model
references (KServe ``storageUri``) are slots too when they are ``oci://`` references; any
other model source (``s3://``, ``pvc://``, a storage key) names bytes no signature covers
and is reported in :attr:`Images.refused`.

Shapes followed (field names as the API server sends them, camelCase):

* core/v1 Pod, PodTemplate, ReplicationController; apps/v1 Deployment, ReplicaSet,
  StatefulSet, DaemonSet; batch/v1 Job, CronJob; argoproj.io Rollout: the pod spec's
  ``initContainers``, ``containers``, ``ephemeralContainers``.
* argoproj.io/v1alpha1 Workflow, WorkflowTemplate, ClusterWorkflowTemplate,
  CronWorkflow (``spec.workflowSpec``): per template (and ``templateDefaults``)
  ``container``, ``script``, ``initContainers[]``, ``sidecars[]``,
  ``containerSet.containers[]``; a ``podSpecPatch`` that sets any image is refused
  (a string patch cannot be verified or pinned).
* serving.kserve.io/v1beta1 InferenceService, as in KServe's own API models (python
  ``kserve`` 0.21: V1beta1InferenceServiceSpec, V1beta1PredictorSpec,
  V1beta1TransformerSpec, V1beta1ExplainerSpec, V1beta1ModelSpec,
  V1beta1PredictorExtensionSpec, V1beta1WorkerSpec, V1beta1StorageUri):
  ``predictor``, ``transformer``, ``explainer`` and ``canary[].predictor`` are pod specs
  (their containers), plus ``workerSpec`` containers, the model-spec shorthand forms
  (``predictor.model`` and the framework fields ``sklearn``, ``xgboost``, ``tensorflow``,
  ``pytorch``, ``triton``, ``onnx``, ``pmml``, ``lightgbm``, ``paddle``, ``huggingface``,
  ``explainer.art``) with their optional ``image``, ``storageUri`` and ``storage``, and
  ``storageUris[].uri``. A shorthand without ``image`` takes it from a ServingRuntime,
  which is admitted (and judged) itself.
* serving.kserve.io/v1alpha1 ServingRuntime, ClusterServingRuntime
  (V1alpha1ServingRuntimeSpec: ``containers``, ``workerSpec.containers``) and
  ClusterStorageContainer (``spec.container``: the storage initializer KServe injects).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

#: The pod spec fields holding containers (an init container runs with the same rights).
POD_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
#: KServe's model-spec shorthand fields of a predictor (each may carry image/storageUri).
KSERVE_PREDICTOR_MODELS = ("model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton",
                           "onnx", "pmml", "lightgbm", "paddle", "huggingface")
KSERVE_COMPONENTS = ("predictor", "transformer", "explainer")
OCI_SCHEME = "oci://"


@dataclass(frozen=True)
class WorkloadKind:
    """A kind the webhook judges: group, the version it is registered for, plural, scope."""

    group: str
    version: str
    kind: str
    resource: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


#: Every kind whose images are found here: the chart registers exactly these.
KINDS: tuple[WorkloadKind, ...] = (
    WorkloadKind("", "v1", "Pod", "pods"),
    WorkloadKind("", "v1", "PodTemplate", "podtemplates"),
    WorkloadKind("", "v1", "ReplicationController", "replicationcontrollers"),
    WorkloadKind("apps", "v1", "Deployment", "deployments"),
    WorkloadKind("apps", "v1", "ReplicaSet", "replicasets"),
    WorkloadKind("apps", "v1", "StatefulSet", "statefulsets"),
    WorkloadKind("apps", "v1", "DaemonSet", "daemonsets"),
    WorkloadKind("batch", "v1", "Job", "jobs"),
    WorkloadKind("batch", "v1", "CronJob", "cronjobs"),
    WorkloadKind("argoproj.io", "v1alpha1", "Rollout", "rollouts"),
    WorkloadKind("argoproj.io", "v1alpha1", "Workflow", "workflows"),
    WorkloadKind("argoproj.io", "v1alpha1", "WorkflowTemplate", "workflowtemplates"),
    WorkloadKind("argoproj.io", "v1alpha1", "ClusterWorkflowTemplate",
                 "clusterworkflowtemplates", namespaced=False),
    WorkloadKind("argoproj.io", "v1alpha1", "CronWorkflow", "cronworkflows"),
    WorkloadKind("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices"),
    WorkloadKind("serving.kserve.io", "v1alpha1", "ServingRuntime", "servingruntimes"),
    WorkloadKind("serving.kserve.io", "v1alpha1", "ClusterServingRuntime",
                 "clusterservingruntimes", namespaced=False),
    WorkloadKind("serving.kserve.io", "v1alpha1", "ClusterStorageContainer",
                 "clusterstoragecontainers", namespaced=False),
)
_BY_GROUP_KIND = {(k.group, k.kind): k for k in KINDS}


@dataclass(frozen=True)
class ImageSlot:
    """One image (or ``oci://`` model reference) and the JSON pointer of its field.

    ``image`` is what the object says without ``scheme`` (validated by the caller, never
    trusted to be a str); ``value`` is the field's whole text, what a patch must test.
    """

    pointer: str
    label: str
    image: Any
    scheme: str = ""

    @property
    def value(self) -> Any:
        return self.scheme + self.image if self.scheme and isinstance(self.image, str) \
            else self.image


@dataclass
class Images:
    """What :func:`find_images` found in one object."""

    kind: WorkloadKind | None
    slots: list[ImageSlot] = field(default_factory=list)
    #: References that name something no signature can cover (each a full sentence).
    refused: list[str] = field(default_factory=list)
    #: The object must yield at least one image (fail closed if none was found): a pod
    #: spec without containers, a workflow without templates or a workflowTemplateRef, an
    #: InferenceService whose predictor names neither containers nor a model.
    expects_containers: bool = False

    @property
    def known(self) -> bool:
        return self.kind is not None


def group_of(api_version: Any) -> str | None:
    """``apps/v1`` -> ``apps``, ``v1`` -> ``""``; None when it is not a string."""
    if not isinstance(api_version, str):
        return None
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def workload_kind(obj: Mapping[str, Any]) -> WorkloadKind | None:
    """The :class:`WorkloadKind` of ``obj`` by API group and kind (exact: ``"Pod "`` is not)."""
    group = group_of(obj.get("apiVersion"))
    kind = obj.get("kind")
    if group is None or not isinstance(kind, str):
        return None
    return _BY_GROUP_KIND.get((group, kind))


def _dict(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _container(found: Images, container: Any, pointer: str, label: str) -> None:
    if isinstance(container, dict):
        name = container.get("name")
        text = f"{label} {name}" if isinstance(name, str) and name else label
        found.slots.append(ImageSlot(f"{pointer}/image", text, container.get("image")))


def _pod_spec(found: Images, spec: Any, pointer: str, prefix: str = "") -> None:
    """The containers of a core pod spec at ``pointer``."""
    spec = _dict(spec)
    if spec is None:
        return
    labels = {"initContainers": "init container", "containers": "container",
              "ephemeralContainers": "ephemeral container"}
    for key in POD_CONTAINER_LISTS:
        for index, container in enumerate(_list(spec.get(key))):
            _container(found, container, f"{pointer}/{key}/{index}", prefix + labels[key])


def _at(obj: Mapping[str, Any], *path: str) -> Any:
    node: Any = obj
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


# -- core kinds ---------------------------------------------------------------------------
_POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def _core(obj: Mapping[str, Any], found: Images) -> None:
    path = _POD_SPEC_PATHS.get(found.kind.kind if found.kind else "",
                               ("spec", "template", "spec"))
    spec = obj.get("spec")
    # An Argo Rollout may reference a Deployment (workloadRef) instead of holding a
    # template: the Deployment is admitted, and judged, itself.
    by_reference = (found.kind is not None and found.kind.kind == "Rollout"
                    and isinstance(spec, dict) and "workloadRef" in spec
                    and "template" not in spec)
    found.expects_containers = not by_reference
    _pod_spec(found, _at(obj, *path), "/" + "/".join(path))


# -- Argo Workflows -----------------------------------------------------------------------
def _argo_patch(found: Images, patch: Any, pointer: str, label: str) -> None:
    """Refuse a podSpecPatch that sets an image: a string patch is neither verified nor pinned."""
    if patch is None:
        return
    parsed = _patch_object(patch)
    if parsed is None:
        found.refused.append(f"{label}: podSpecPatch ({pointer}) is not a JSON or YAML "
                             "object, so the images it may set cannot be verified")
    elif _sets_image(parsed):
        found.refused.append(f"{label}: podSpecPatch ({pointer}) sets a container image, "
                             "which cannot be verified or pinned; set the image in the "
                             "template's container instead")


def _patch_object(text: Any) -> dict[str, Any] | None:
    """A podSpecPatch string (JSON or YAML) as an object; None when it is not one.

    YAML aliases are refused before anything is constructed: expanding nested aliases
    (a "billion laughs" document) would exhaust memory.
    """
    if not isinstance(text, str):
        return None
    try:
        if any(isinstance(event, yaml.AliasEvent)
               for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            return None
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _sets_image(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "image" in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _argo_template(found: Images, template: Any, pointer: str, label: str,
                   defaults: Mapping[str, Any] | None, *, is_default: bool = False) -> None:
    template = _dict(template)
    if template is None:
        return
    for key in ("container", "script"):
        container = _dict(template.get(key))
        if container is None:
            continue
        if "image" not in container and (
                is_default or isinstance(_at(defaults or {}, key, "image"), str)):
            continue  # a default without an image, or one the templateDefaults supply
        _container(found, container, f"{pointer}/{key}", f"{label} {key}")
    for key, what in (("initContainers", "init container"), ("sidecars", "sidecar")):
        for index, container in enumerate(_list(template.get(key))):
            _container(found, container, f"{pointer}/{key}/{index}", f"{label} {what}")
    for index, container in enumerate(_list(_at(template, "containerSet", "containers"))):
        _container(found, container, f"{pointer}/containerSet/containers/{index}",
                   f"{label} containerSet container")
    _argo_patch(found, template.get("podSpecPatch"), f"{pointer}/podSpecPatch", label)


def _argo_spec(found: Images, spec: Any, pointer: str) -> None:
    spec = _dict(spec)
    # A workflow runs its templates, or those of the WorkflowTemplate it references (which
    # is admitted itself); with neither there is nothing that could be verified.
    found.expects_containers = not (spec and (_list(spec.get("templates"))
                                              or spec.get("workflowTemplateRef")))
    if spec is None:
        return
    defaults = _dict(spec.get("templateDefaults"))
    if defaults is not None:
        _argo_template(found, defaults, f"{pointer}/templateDefaults", "templateDefaults", None,
                       is_default=True)
    for index, template in enumerate(_list(spec.get("templates"))):
        name = template.get("name") if isinstance(template, dict) else None
        label = f"template {name}" if isinstance(name, str) and name else f"template {index}"
        _argo_template(found, template, f"{pointer}/templates/{index}", label, defaults)
    _argo_patch(found, spec.get("podSpecPatch"), f"{pointer}/podSpecPatch", "workflow")


def _argo(obj: Mapping[str, Any], found: Images) -> None:
    if found.kind is not None and found.kind.kind == "CronWorkflow":
        _argo_spec(found, _at(obj, "spec", "workflowSpec"), "/spec/workflowSpec")
    else:
        _argo_spec(found, obj.get("spec"), "/spec")


# -- KServe -------------------------------------------------------------------------------
def _storage_uri(found: Images, uri: Any, pointer: str, label: str) -> None:
    if uri is None or uri == "":
        return
    if isinstance(uri, str) and uri.startswith(OCI_SCHEME):
        found.slots.append(ImageSlot(pointer, f"{label} storageUri", uri[len(OCI_SCHEME):],
                                     OCI_SCHEME))
        return
    shown = repr(uri) if len(repr(uri)) <= 80 else repr(uri)[:77] + "..."
    found.refused.append(
        f"{label}: model {shown} ({pointer}) is not an oci:// reference, so no signature "
        "can be verified for it; push the sealed model to a registry (pipeline push-model) "
        "and reference it as oci://REPOSITORY@sha256:...")


def _model_spec(found: Images, spec: Any, pointer: str, label: str) -> None:
    """A KServe model spec (ModelSpec, PredictorExtensionSpec, ExplainerExtensionSpec)."""
    spec = _dict(spec)
    if spec is None:
        return
    if "image" in spec:
        found.slots.append(ImageSlot(f"{pointer}/image", label, spec.get("image")))
    _storage_uri(found, spec.get("storageUri"), f"{pointer}/storageUri", label)
    if spec.get("storage") is not None:
        found.refused.append(
            f"{label}: model storage {pointer}/storage (a storage key and path) is not an "
            "oci:// reference, so no signature can be verified for it; use storageUri "
            "oci://REPOSITORY@sha256:...")


def _kserve_component(found: Images, spec: Any, pointer: str, label: str,
                      models: tuple[str, ...]) -> None:
    spec = _dict(spec)
    if spec is None:
        return
    _pod_spec(found, spec, pointer, f"{label} ")
    _pod_spec(found, spec.get("workerSpec"), f"{pointer}/workerSpec", f"{label} worker ")
    for index, entry in enumerate(_list(spec.get("storageUris"))):
        uri = entry.get("uri") if isinstance(entry, dict) else entry
        _storage_uri(found, uri, f"{pointer}/storageUris/{index}/uri",
                     f"{label} storageUris[{index}]")
    for model in models:
        _model_spec(found, spec.get(model), f"{pointer}/{model}", f"{label} {model}")


def _kserve(obj: Mapping[str, Any], found: Images) -> None:
    kind = found.kind.kind if found.kind else ""
    spec = obj.get("spec")
    if kind == "InferenceService":
        # KServe requires a predictor with containers, a model or a framework shorthand.
        predictor = _dict(_at(obj, "spec", "predictor")) or {}
        found.expects_containers = not any(
            predictor.get(key) for key in ("containers", *KSERVE_PREDICTOR_MODELS))
        models = {"predictor": KSERVE_PREDICTOR_MODELS, "explainer": ("art",),
                  "transformer": ()}
        for component in KSERVE_COMPONENTS:
            _kserve_component(found, _at(obj, "spec", component), f"/spec/{component}",
                              component, models[component])
        for index, canary in enumerate(_list(_at(obj, "spec", "canary"))):
            _kserve_component(found, _at(canary, "predictor"),
                              f"/spec/canary/{index}/predictor", f"canary {index} predictor",
                              KSERVE_PREDICTOR_MODELS)
    elif kind == "ClusterStorageContainer":
        found.expects_containers = True
        _container(found, _at(obj, "spec", "container"), "/spec/container",
                   "storage container")
    else:  # ServingRuntime, ClusterServingRuntime
        found.expects_containers = True
        _pod_spec(found, spec, "/spec")
        _pod_spec(found, _at(obj, "spec", "workerSpec"), "/spec/workerSpec", "worker ")


def find_images(obj: Mapping[str, Any]) -> Images:
    """Every image and model reference of ``obj``; ``kind`` is None for an unknown kind."""
    kind = workload_kind(obj)
    found = Images(kind)
    if kind is None:
        return found
    if kind.group == "serving.kserve.io":
        _kserve(obj, found)
    elif kind.group == "argoproj.io" and kind.kind != "Rollout":
        _argo(obj, found)
    else:
        _core(obj, found)
    return found


def container_images(obj: Mapping[str, Any]) -> Iterator[str]:
    """The image references of ``obj`` (model references without ``oci://``), in order."""
    for slot in find_images(obj).slots:
        if isinstance(slot.image, str):
            yield slot.image


__all__ = ["KINDS", "OCI_SCHEME", "ImageSlot", "Images", "WorkloadKind", "container_images",
           "find_images", "group_of", "workload_kind"]
