"""``python -m secure_runtime``: resolve the configuration, then serve until SIGTERM.

Exit codes are those of docs/exit-codes.md (a pod's restart reason says what went
wrong: 3 config, 5 integrity, 6 signature, 7 key, 8 refused as insecure, ...).
A user error is one log line ``error: <what and why>``, never a traceback; only a
bug (exit 1) logs one, because then the traceback is the report.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from pipeline.errors import EXIT_CONFIG, EXIT_INTERNAL, PipelineError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_INTERRUPTED = 130
#: What the server needs beyond the CLI: the ``[runtime]`` extra (its image has them).
RUNTIME_MODULES = frozenset({"torch", "safetensors", "numpy", "fastapi", "starlette",
                             "uvicorn", "grpc", "prometheus_client"})

log = logging.getLogger("secure_runtime")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the runtime; returns the process exit code."""
    from secure_runtime.config import resolve_config

    _setup_logging("info")
    try:
        config = resolve_config(sys.argv[1:] if argv is None else argv, os.environ)
        _setup_logging(config.log_level)
        from secure_runtime.startup import serve

        return serve(config)
    except PipelineError as exc:
        log.error("error: %s", exc)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in RUNTIME_MODULES:
            log.exception("internal error")
            return EXIT_INTERNAL
        log.error("error: the runtime needs the 'runtime' extra: pip install "
                  "'secure-model-pipeline[runtime]' (no module named %r)", exc.name)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - a bug: the traceback is the report
        log.exception("internal error")
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
