"""A small chart written into a test's directory: two objects in one template, a schema.

With its defaults it passes every default policy; ``hostNetwork=true`` breaks one.

Why a chart of our own beside helm/secure-runtime: it lets a test put a policy violation
at a known line of a known template, and fail rendering on purpose, without editing the
project's charts.
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA = {
    "$schema": "https://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "minimum": 0},
        "hostNetwork": {"type": "boolean"},
        "image": {"type": "string"},
    },
}

#: The template: the Pod's ``kind:`` is on line 9, the Service's on line 2.
PODS = """---
kind: Service
apiVersion: v1
metadata: {name: {{ .Release.Name }}-svc, namespace: {{ .Release.Namespace }}}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-pod
  namespace: {{ .Release.Namespace }}
spec:
  hostNetwork: {{ .Values.hostNetwork }}
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: app
      image: {{ .Values.image | quote }}
      securityContext:
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
{{- if .Values.mustFail }}
{{ fail "mustFail is set: this chart refuses to render" }}
{{- end }}
"""
POD_LINE = 9
SERVICE_LINE = 2


def write_chart(root: Path, name: str = "demo") -> Path:
    """Write the chart under ``root/name`` and return its directory."""
    chart = root / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {name}\nversion: 0.1.0\ntype: application\n")
    (chart / "values.yaml").write_text(
        "replicas: 1\nhostNetwork: false\nimage: registry.example/app@sha256:"
        + "c3" * 32 + "\nmustFail: false\n")
    (chart / "values.schema.json").write_text(json.dumps(SCHEMA))
    (chart / "templates" / "pods.yaml").write_text(PODS)
    (chart / "templates" / "NOTES.txt").write_text("installed {{ .Release.Name }}\n")
    return chart
