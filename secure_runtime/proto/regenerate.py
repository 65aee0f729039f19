"""Regenerate the committed gRPC stubs from grpc_predict_v2.proto.

Run ``python -m secure_runtime.proto.regenerate`` (needs the ``test`` extra's
``grpcio-tools``). The stubs are committed so that the runtime image needs only
``grpcio`` and ``protobuf``, never the code generator. Generating with the
repository root as the include path makes the stubs import each other as
``secure_runtime.proto.*``, so no hand edits are needed afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "secure_runtime/proto/grpc_predict_v2.proto"


def main() -> int:
    """Invoke protoc from grpcio-tools; non-zero when generation fails."""
    try:
        from grpc_tools import protoc
    except ImportError:
        print("error: grpcio-tools is not installed (pip install grpcio-tools)", file=sys.stderr)
        return 3
    import importlib.resources

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        str(ROOT / PROTO),
    ]
    return protoc.main(args)


if __name__ == "__main__":
    sys.exit(main())
