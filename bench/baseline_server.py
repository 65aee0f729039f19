"""The plain baseline for bench_runtime: FastAPI + torch on *plaintext* weights.

    python -m bench.baseline_server PROJECT_DIR --port P [--device cpu|cuda]

What a team would write without this project: read ``model.safetensors`` from disk,
build the module from the project's ``model.py``, answer OIP v2 JSON requests with
no signature check, no decryption, no validation beyond what torch needs, no
metrics, no hardening. Same uvicorn settings as the runtime (one process, no
access log), so the difference the benchmark measures is ours. ``--device cuda``
serves on the GPU: weights loaded with ``load_file(device=...)``, inputs moved there,
outputs back (what a plain PyTorch GPU server does).
"""

from __future__ import annotations

import argparse
import json
import threading
import types
from pathlib import Path
from typing import Any

import torch
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import Response
from safetensors.torch import load_file
from starlette.concurrency import run_in_threadpool


def build(project: Path, device: str = "cpu"
          ) -> tuple[str, torch.nn.Module, types.ModuleType, dict[str, Any]]:
    """Module with its plaintext weights on ``device``, as pipeline.yaml describes it."""
    spec = yaml.safe_load((project / "pipeline.yaml").read_text())
    section = spec["model"]
    code = types.ModuleType("baseline_model")
    source = project / section.get("module", "model.py")
    exec(compile(source.read_text(), str(source), "exec"), code.__dict__)  # noqa: S102
    config = json.loads((project / section["config"]).read_text()) if section.get("config") else {}
    module = getattr(code, section.get("factory", "build_model"))(config)
    tensors: dict[str, torch.Tensor] = {}
    for name in section.get("weights", ["model.safetensors"]):
        tensors.update(load_file(str(project / name), device=device))
    if hasattr(module, "load_weights"):
        module.load_weights(tensors)
    else:
        module.load_state_dict(tensors)
    return spec.get("name", project.name), module.to(device).eval(), code, section


def _to(value: Any, device: str) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def create_app(project: Path, device: str = "cpu") -> FastAPI:
    """Load at start-up (in the background, like the runtime), then serve."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def load() -> None:
        name, module, code, section = build(project, device)
        files = {p.name: p.read_bytes() for p in project.iterdir() if p.suffix == ".json"}
        state.update(name=name, module=module, code=code, section=section, files=files)
        with torch.inference_mode():  # warm up once, as the runtime does
            if section.get("preprocess"):
                prep = getattr(code, section["preprocess"])(["warm up"], files)
                module(**{k: _to(v, device) for k, v in prep.items()})
            else:
                shape = [1 if d == -1 else d for d in section["inputs"][0]["shape"]]
                module(torch.zeros(shape, device=device))
        state["ready"] = True

    threading.Thread(target=load, daemon=True).start()

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if state.get("ready") else 503)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        body = await request.body()

        def run() -> bytes:
            payload = json.loads(body)
            module, section = state["module"], state["section"]
            with lock, torch.inference_mode():
                if "text" in payload:
                    prep = getattr(state["code"], section["preprocess"])
                    inputs = prep(payload["text"], state["files"])
                    result = module(**{k: _to(v, device) for k, v in inputs.items()})
                else:
                    item = payload["inputs"][0]
                    tensor = torch.tensor(item["data"], dtype=torch.float32).reshape(item["shape"])
                    result = module(tensor.to(device))
                result = result.cpu()
            out = {"name": section["outputs"][0]["name"], "datatype": "FP32",
                   "shape": list(result.shape), "data": result.reshape(-1).tolist()}
            return json.dumps({"model_name": name, "outputs": [out]}).encode()

        return Response(await run_in_threadpool(run), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    uvicorn.run(create_app(args.project, args.device), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
