"""Run a loaded model: validated OIP tensors in, named result tensors out.

The engine knows the model's declared inputs and outputs (pipeline.yaml
``model.inputs`` / ``model.outputs``), checks each request against them (name,
datatype, rank, fixed dimensions) before anything touches the module, and maps
whatever ``forward`` returns (a tensor, a tuple, a dict) onto the declared output
names. Text models (``task: text-embedding``) take one BYTES input: the strings go
through the project's own ``preprocess(texts, files)`` (tokeniser bytes from the
verified sealed directory) before ``forward``.

One lock serialises ``forward``: a torch module's buffers and autograd state are
not guaranteed re-entrant, and on CPU each forward already uses every core
through intra-op threads, so concurrency would only add contention.
"""

from __future__ import annotations

import inspect
import threading
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from pipeline.errors import ConfigError
from secure_runtime.protocol import (
    DATATYPES,
    ProtocolError,
    Tensor,
    output_tensor,
    tensor_from_values,
)

if TYPE_CHECKING:
    from secure_runtime.loader import LoadedModel

TEXT_TASKS = frozenset({"text-embedding", "text-classification", "text"})
PLATFORM = "pytorch_torchscript"  # OIP platform names have no "pytorch eager"; closest fit


@dataclass(frozen=True)
class TensorSpec:
    """A declared input or output: name, OIP datatype, shape with -1 for any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """OIP metadata form."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def check(self, tensor: Tensor) -> None:
        """ProtocolError unless ``tensor`` fits this declaration."""
        if tensor.datatype != self.datatype:
            raise ProtocolError(
                f"input {self.name!r}: datatype {tensor.datatype} does not match the model's "
                f"{self.datatype}"
            )
        if len(tensor.shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, tensor.shape, strict=True)
        ):
            raise ProtocolError(
                f"input {self.name!r}: shape {list(tensor.shape)} does not match the model's "
                f"{list(self.shape)}"
            )


def _specs(section: Mapping[str, Any], key: str) -> tuple[TensorSpec, ...]:
    raw = section.get(key) or []
    if not isinstance(raw, list):
        raise ConfigError(f"pipeline.yaml model.{key} must be a list")
    specs: list[TensorSpec] = []
    for index, item in enumerate(raw):
        where = f"pipeline.yaml model.{key}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where} needs a name")
        datatype = item.get("datatype", "FP32")
        if datatype not in DATATYPES:
            raise ConfigError(f"{where}: unknown datatype {datatype!r}")
        shape = item.get("shape", [-1])
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise ConfigError(f"{where}: shape must be a list of integers (-1 = any)")
        specs.append(TensorSpec(item["name"], datatype, tuple(shape)))
    return tuple(specs)


class InferenceEngine:
    """A built module plus its declared interface; :meth:`infer` is thread-safe."""

    def __init__(
        self,
        model: LoadedModel,
        module: torch.nn.Module,
        code: types.ModuleType | None = None,
    ) -> None:
        section = model.project.get("model") or {}
        if not isinstance(section, dict):
            raise ConfigError("pipeline.yaml 'model' must be a mapping")
        self.name = model.name
        self.device = model.device
        self.module = module
        self.files = model.files
        self.task = str(section.get("task", "tensor"))
        self.inputs = _specs(section, "inputs")
        self.outputs = _specs(section, "outputs")
        self.version = str(model.project.get("version", "1"))
        self._lock = threading.Lock()
        self._preprocess = self._hook(code, section.get("preprocess"), "preprocess")
        self._postprocess = self._hook(code, section.get("postprocess"), "postprocess")
        if self.is_text and (len(self.inputs) != 1 or self.inputs[0].datatype != "BYTES"):
            raise ConfigError(f"task {self.task!r} needs exactly one BYTES input in pipeline.yaml")
        if self.is_text and self._preprocess is None:
            raise ConfigError(f"task {self.task!r} needs model.preprocess (tokenisation)")
        if not self.inputs:
            raise ConfigError("pipeline.yaml model.inputs is empty: cannot validate requests")
        self._keyword = self._forward_takes_names()

    @staticmethod
    def _hook(code: types.ModuleType | None, name: Any, what: str) -> Any:
        if not name:
            return None
        func = getattr(code, str(name), None) if code is not None else None
        if not callable(func):
            raise ConfigError(f"model.{what}: {name!r} is not a function of the model module")
        return func

    @property
    def is_text(self) -> bool:
        """True for models whose input is text (friendly ``{"text": [...]}`` form)."""
        return self.task in TEXT_TASKS

    @property
    def text_input(self) -> str | None:
        """Name of the BYTES input that ``{"text": [...]}`` fills, for text models."""
        return self.inputs[0].name if self.is_text else None

    def _forward_takes_names(self) -> bool:
        if self._preprocess is not None:
            return True  # preprocess returns a dict of keyword arguments
        try:
            params = inspect.signature(self.module.forward).parameters
        except (TypeError, ValueError):
            return False
        return all(spec.name in params for spec in self.inputs)

    def metadata(self) -> dict[str, Any]:
        """OIP model metadata (REST form; gRPC builds its message from the same dict)."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
        }

    # ------------------------------------------------------------------ running

    def _arguments(self, inputs: Sequence[Tensor]) -> tuple[list[Any], dict[str, Any]]:
        by_name = {t.name: t for t in inputs}
        declared = {s.name for s in self.inputs}
        unknown = sorted(set(by_name) - declared)
        if unknown:
            raise ProtocolError(f"unknown input {unknown[0]!r} (model takes {sorted(declared)})")
        missing = [s.name for s in self.inputs if s.name not in by_name]
        if missing:
            raise ProtocolError(f"missing input {missing[0]!r}")
        for spec in self.inputs:
            spec.check(by_name[spec.name])
        if self._preprocess is not None:
            texts = by_name[self.inputs[0].name].as_strings()
            if not texts:
                raise ProtocolError("no text given")
            prepared = self._preprocess(texts, self.files)
            if not isinstance(prepared, dict):
                raise ConfigError("model preprocess must return a dict of tensors")
            return [], {k: _to_device(v, self.device) for k, v in prepared.items()}
        values = [_to_device(by_name[s.name].value, self.device) for s in self.inputs]
        if self._keyword:
            return [], {s.name: v for s, v in zip(self.inputs, values, strict=True)}
        return values, {}

    def _name_results(self, result: Any) -> dict[str, Any]:
        names = [s.name for s in self.outputs]
        if isinstance(result, Mapping):
            return dict(result)
        if isinstance(result, torch.Tensor):
            return {names[0] if names else "output": result}
        if isinstance(result, tuple | list):
            if len(names) < len(result):
                names += [f"output_{i}" for i in range(len(names), len(result))]
            return dict(zip(names, result, strict=False))
        raise ConfigError(f"model returned {type(result).__name__}, not tensors")

    def infer(self, inputs: Sequence[Tensor], requested: Sequence[str] | None = None
              ) -> list[Tensor]:
        """Validate, run ``forward`` under ``inference_mode``, return the requested outputs."""
        args, kwargs = self._arguments(inputs)
        with self._lock, torch.inference_mode():
            result = self.module(*args, **kwargs)
            if self._postprocess is not None:
                result = self._postprocess(result)
            named = self._name_results(result)
            if requested is not None:
                missing = [n for n in requested if n not in named]
                if missing:
                    raise ProtocolError(
                        f"unknown output {missing[0]!r} (model has {sorted(named)})"
                    )
                named = {n: named[n] for n in requested}
            outputs = [output_tensor(name, value) for name, value in named.items()]
        return outputs

    def example_inputs(self) -> list[Tensor]:
        """A smallest valid request (-1 dimensions as 1): used to warm up after load."""
        examples: list[Tensor] = []
        for spec in self.inputs:
            shape = [1 if d == -1 else d for d in spec.shape]
            count = 1
            for dim in shape:
                count *= dim
            if spec.datatype == "BYTES":
                data: list[Any] = ["warm up"] * count
            elif spec.datatype == "BOOL":
                data = [False] * count
            elif spec.datatype.startswith("FP"):
                data = [0.0] * count
            else:
                data = [0] * count
            examples.append(tensor_from_values(spec.name, spec.datatype, shape, data))
        return examples

    def warm_up(self) -> None:
        """Run once so the first real request does not pay for lazy initialisation."""
        self.infer(self.example_inputs())


def _to_device(value: Any, device: str) -> Any:
    if isinstance(value, torch.Tensor) and device != "cpu":
        return value.to(device, non_blocking=True)
    return value


__all__ = ["InferenceEngine", "TensorSpec"]
