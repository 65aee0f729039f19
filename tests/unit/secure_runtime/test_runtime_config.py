"""``python -m secure_runtime`` configuration: flag > env > file > default, and the chart agrees.

The chart test renders helm/secure-runtime with the real Helm engine and feeds the
container's args and env to the runtime's own resolver: a flag the chart passes
but the runtime does not know (or the reverse) fails here, not in a cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import EXIT_CONFIG, EXIT_USAGE, ConfigError
from secure_runtime.config import OPTIONS, RuntimeConfig, UsageError, resolve_config

CHART = Path(__file__).resolve().parents[3] / "helm" / "secure-runtime"
DIGEST = "sha256:" + "b2" * 32


def test_defaults() -> None:
    config = resolve_config(["--model", "/m"], {})
    assert config == RuntimeConfig(model="/m")
    assert config.host == "127.0.0.1" and config.port == 8080 and config.grpc_port == 8081
    assert config.allow_root is False and config.allow_tag is False and config.warmup is True


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    file = tmp_path / "runtime.yaml"
    file.write_text("model: /from-file\nport: 7001\ngrpc_port: 7002\ndevice: cpu\n"
                    "allow_root: true\ntrust: [/a.pub, /b.pub]\ndrain_seconds: 5\n")
    env = {"SECURE_RUNTIME_CONFIG": str(file), "SECURE_RUNTIME_PORT": "7101",
           "SECURE_RUNTIME_ALLOW_ROOT": "0"}
    config = resolve_config(["--port", "7201"], env)
    assert config.model == "/from-file"          # file
    assert config.port == 7201                   # flag over env over file
    assert config.grpc_port == 7002 and config.device == "cpu"
    assert config.allow_root is False            # env over file
    assert config.trust == (Path("/a.pub"), Path("/b.pub"))
    assert config.drain_seconds == 5.0
    assert resolve_config(["--allow-root"], env).allow_root is True
    assert resolve_config(["--config", str(file)], {}).allow_root is True


def test_environment_forms() -> None:
    env = {"SECURE_RUNTIME_MODEL": "/m", "SECURE_RUNTIME_TRUST": "/a.pub:/b.pub",
           "SECURE_RUNTIME_GRPC_PORT": "off", "SECURE_RUNTIME_ALLOW_ROOT": "1",
           "SECURE_RUNTIME_KEY_FILE": "/keys/kek", "SECURE_RUNTIME_LOG_LEVEL": "DEBUG"}
    config = resolve_config([], env)
    assert config.trust == (Path("/a.pub"), Path("/b.pub"))
    assert config.grpc_port is None and config.allow_root is True
    assert config.key_file == Path("/keys/kek") and config.log_level == "debug"
    assert resolve_config(["--model", "/m", "--no-grpc"], {}).grpc_port is None
    assert resolve_config(["--model", "/m", "--trust", "/x", "--trust", "/y"], {}).trust == (
        Path("/x"), Path("/y"))


@pytest.mark.parametrize(
    ("argv", "env", "file", "needle"),
    [
        (["--model", "/m", "--port", "0"], {}, None, "invalid port"),
        (["--model", "/m", "--port", "70000"], {}, None, "invalid port"),
        (["--model", "/m"], {"SECURE_RUNTIME_ALLOW_ROOT": "maybe"}, None, "allow_root"),
        (["--model", "/m", "--max-request-bytes", "-1"], {}, None, "positive integer"),
        (["--model", "/m"], {}, "prot: 1\n", "unknown setting 'prot'"),
        (["--model", "/m"], {}, "port: true\n", "invalid port"),
        (["--model", "/m"], {}, "- a\n", "mapping"),
        (["--model", "/m", "--config", "/nonexistent.yaml"], {}, None, "not found"),
    ],
)
def test_invalid_settings_are_config_errors(tmp_path: Path, argv: list[str], env: dict[str, str],
                                            file: str | None, needle: str) -> None:
    if file is not None:
        (tmp_path / "c.yaml").write_text(file)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    with pytest.raises(ConfigError, match=needle) as info:
        resolve_config(argv, env)
    assert info.value.exit_code == EXIT_CONFIG


def test_usage_errors() -> None:
    with pytest.raises(UsageError, match="--model is required") as info:
        resolve_config([], {})
    assert info.value.exit_code == EXIT_USAGE
    with pytest.raises(UsageError, match="unrecognized"):
        resolve_config(["--model", "/m", "--prot", "1"], {})
    with pytest.raises(UsageError):  # no abbreviations: --allow must not mean --allow-root
        resolve_config(["--model", "/m", "--allow"], {})


def test_every_option_has_flag_env_and_field() -> None:
    fields = set(RuntimeConfig.__dataclass_fields__)
    assert {o.field for o in OPTIONS} == fields
    assert all(o.env == "SECURE_RUNTIME_" + o.field.upper() for o in OPTIONS)


# --------------------------------------------------------------------------- the chart


def _container(values: dict) -> dict:
    from tests.support.helm import render_chart

    objs = render_chart(CHART, values)
    (workload,) = [o for o in objs if o["kind"] in ("Deployment", "Rollout")]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("volume", [False, True])
def test_chart_arguments_are_what_the_runtime_accepts(volume: bool) -> None:
    values: dict = {"image": {"digest": "sha256:" + "a1" * 32}, "model": {"digest": DIGEST},
                    "runtime": {"extraArgs": ["--drain-seconds", "20"],
                                "extraEnv": [{"name": "SECURE_RUNTIME_LOG_LEVEL",
                                              "value": "warning"}]}}
    if volume:
        values["model"] = {"digest": "", "volume": {"enabled": True, "claimName": "c",
                                                    "subPath": "tiny"}}
    container = _container(values)
    assert container["command"] == ["/usr/bin/python3", "-m", "secure_runtime"]
    env = {e["name"]: e["value"] for e in container["env"]}
    config = resolve_config(container["args"], env)
    assert config.host == "0.0.0.0"  # reachable by the kubelet's probes and the Service
    assert config.port == 8080 and config.grpc_port == 8081
    assert config.model == ("/models/tiny" if volume else
                            f"registry.example.com/secure-model-pipeline/models/minilm-sealed@{DIGEST}")
    assert config.trust == (Path("/etc/secure-runtime/trust/trust.pub"),)
    assert config.key_file == Path("/var/run/secrets/secure-runtime/keys/kek")
    assert config.drain_seconds == 20.0 and config.log_level == "warning"
    assert config.allow_root is False and config.allow_tag is False
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.port, "grpc": config.grpc_port}


@pytest.mark.parametrize("gpu", [{"enabled": True}, {"enabled": True,
                                                     "resourceName": "nvidia.com/mig-1g.10gb"}])
def test_a_gpu_pod_runs_on_cuda(gpu: dict) -> None:
    """Under ``auto`` a GPU pod whose driver is missing would serve on CPU without a word:
    the chart asks for ``cuda`` so the runtime fails instead (and extraArgs still win)."""
    base = {"image": {"digest": "sha256:" + "a1" * 32}, "model": {"digest": DIGEST}}
    assert resolve_config(_container({**base, "gpu": gpu})["args"], {}).device == "cuda"
    assert resolve_config(_container(base)["args"], {}).device == "auto"
    chosen = _container({**base, "gpu": gpu, "runtime": {"extraArgs": ["--device", "cuda:1"]}})
    assert resolve_config(chosen["args"], {}).device == "cuda:1"


def test_chart_drain_fits_the_termination_grace_period() -> None:
    from tests.support.helm import render_chart

    objs = render_chart(CHART, {"image": {"digest": "sha256:" + "a1" * 32},
                                "model": {"digest": DIGEST}})
    (workload,) = [o for o in objs if o["kind"] == "Deployment"]
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    config = resolve_config(container["args"], {})
    assert config.drain_seconds <= spec["terminationGracePeriodSeconds"]


def test_canary_analysis_query_uses_the_runtime_metric_labels() -> None:
    import re

    from secure_runtime.metrics import RuntimeMetrics
    from tests.support.helm import render_chart

    objs = render_chart(CHART, {"image": {"digest": "sha256:" + "a1" * 32},
                                "model": {"digest": DIGEST}, "rollout": {"enabled": True}})
    queries = [m["provider"]["prometheus"]["query"] for o in objs
               if o["kind"] == "AnalysisTemplate" for m in o["spec"]["metrics"]]
    assert queries
    metrics = RuntimeMetrics()
    labels = set(metrics.requests._labelnames) | set(metrics.latency._labelnames)
    for query in queries:
        used = set(re.findall(r"[{,]\s*([a-z_]+)\s*(?:!~|=~|!=|=)", query))
        # namespace/service come from the ServiceMonitor's target labels; the runtime's
        # own "endpoint" arrives renamed, as the target's "endpoint" (the port) wins.
        runtime_labels = {u.removeprefix("exported_") for u in used - {"namespace", "service"}}
        assert runtime_labels and runtime_labels <= labels, (runtime_labels, labels)


def test_runtime_imports_stay_small() -> None:
    """The runtime image carries no CLI, build or release code (DESIGN.md)."""
    import subprocess
    import sys

    code = ("import sys, secure_runtime.__main__, secure_runtime.startup, "
            "secure_runtime.rest, secure_runtime.grpc_service, secure_runtime.loader; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('pipeline'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "pipeline.errors" in loaded
    banned = [m for m in loaded if m.startswith(("pipeline.cli", "pipeline._cli", "pipeline.build",
                                                 "pipeline.release", "pipeline.scan"))]
    assert banned == []
