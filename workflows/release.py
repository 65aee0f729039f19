"""``release``: from a git revision to a signed, attested, pushed and policy-checked release.

The DAG (independent steps run in parallel)::

    checkout ─┬─ seal-model ── push-model ─────────────────────────────────┐
              └─ build ─┬─ sbom ───────── attest-sbom ──────┐              │
                        ├─ scan ───────── attest-vuln ──────┼─ verify ── policy-check
                        ├─ provenance ─── attest-provenance ┤
                        └─ push-image ─┬─ sign-image ───────┘
                                       └─ (attest-* also wait for push-image)

    policy-check ── record-release ── promote   (the hand-off)

The hand-off clones ``gitops-repo``, commits the release record (``releases/*.json``:
digests, signatures, attestations, SBOM and scan summary, provenance, seal manifest,
policy results, admission decision) and pushes it, then ``pipeline promote`` walks the
release through the canary stages of ``environment`` (default: the first environment
of the project's pipeline.yaml, else ``dev``) with the same gates as by hand;
``promote-flags`` adds the analysis target (``--prometheus URL`` on a cluster,
``--local --stable-url ... --canary-url ...`` on one machine). Without them,
``promote-local=true`` (what ``pipeline init`` sets for a loopback registry) is the
embedded default: on the local runner, ``pipeline promote --local`` starts the chart's
pods from the pushed image and sealed model (the KEK Secret mounted as the chart's
``keys`` Secret, the release key as the chart's trust root) and drives
``canary-traffic-body`` at ``canary-traffic-path`` through the split while the canary
steps run.

Secrets (the release signing key pair, the KEK keyring) are mounted from the Kubernetes
Secrets named by ``signing-key-secret`` and ``kek-secret``; only their paths appear in the
scripts. The image and the model are referred to by the digests their push steps output.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate
from pipeline.workflows.common import (
    CHECKOUT_SOURCE,
    ENVIRONMENT,
    GITOPS,
    KEK_MOUNT,
    KEYRING,
    SIGNING_KEY,
    SIGNING_PUB,
    WORKSPACE,
    gitops_checkout,
    kek_volume,
    registry_flags,
    signing_volume,
    step,
    workspace_claim,
    wp,
)

PARAMETERS = {
    "pipeline-image": "registry.example/ml/pipeline@sha256:" + "0" * 64,
    "git-repo": "",
    "git-revision": "HEAD",
    "model-dir": "model",
    "repository": "registry.example/ml/secure-runtime",
    "model-repository": "registry.example/ml/models/model",
    "registry-insecure": "false",
    "kek-name": "release-kek",
    "kek-secret": "pipeline-kek",
    "signing-key-secret": "pipeline-release-signing",
    "scan-env": "prod",
    "chart": "helm/secure-runtime",
    "image-policy": "policies/image-policy.yaml",
    "gitops-repo": "",
    "environment": "",
    "promote-flags": "",
    "promote-local": "false",
    "canary-traffic-path": "",
    "canary-traffic-body": "",
    "run-url": "",
}

ATTESTATIONS = (("provenance", "slsaprovenance", "provenance.json"),
                ("sbom", "cyclonedx", "sbom.json"),
                ("vuln", "vuln", "vuln.json"))


#: Bash: the embedded default's promotion target (``promote-local=true``, no
#: ``promote-flags``): the chart's pods on this machine (``pipeline promote --local``
#: without server URLs). Only the local runner (``PIPELINE_RUN_DIR``) has this machine's
#: pods to start; on a cluster the step refuses (exit 3) and names the parameter to set.
#: The values it adds are what a cluster provisions out of band: the trust root (the
#: release key, a ConfigMap there), the KEK Secret (the mounted ``kek-secret``), and the
#: insecure-registry flag of a loopback registry.
EMBEDDED_PROMOTION = f"""
if [ ${{#extra[@]}} -eq 0 ]; then
  if [ -z "${{PIPELINE_RUN_DIR:-}}" ]; then
    echo "error: promote-local=true starts the chart's pods on this machine: only the" \\
         "local runner can; on a cluster set promote-flags (--prometheus URL)" >&2
    exit 3
  fi
  values={WORKSPACE}/promote-values.yaml
  {{
    echo "trust:"
    echo "  publicKey: |"
    sed 's/^/    /' {SIGNING_PUB}
    echo "keys: {{secretName: pipeline-kek, key: keyring.json}}"
    if [ "{wp('registry-insecure')}" = "true" ]; then
      echo "runtime: {{extraArgs: [--registry-insecure]}}"
    fi
  }} > "$values"
  extra=(--local -f "$values" --secret "pipeline-kek={KEK_MOUNT}")
  if [ -n "{wp('canary-traffic-path')}" ] && [ -n "{wp('canary-traffic-body')}" ]; then
    extra+=(--traffic-path "{wp('canary-traffic-path')}"
            --traffic-body "{WORKSPACE}/src/{wp('canary-traffic-body')}")
  fi
  echo "promote: the embedded default: the chart's pods on this machine (pipeline" \\
       "promote --local), from the pushed image and sealed model"
fi
"""


def _templates() -> dict[str, object]:
    w = WORKSPACE
    t = {
        "checkout": step("checkout", CHECKOUT_SOURCE),
        "seal-model": step("seal-model", f"""
PIPELINE_KEYRING={KEYRING} pipeline seal "{w}/src/{wp('model-dir')}" --key "{wp('kek-name')}" \\
    --out {w}/model.sealed --sign-key {SIGNING_KEY} --force
mkdir -p {w}/evidence
pipeline verify-model {w}/model.sealed --trust {SIGNING_PUB} --json > {w}/evidence/model-verify.json
""", secrets=(signing_volume(), kek_volume())),
        "build": step("build", f"pipeline build {w}/src --out {w}/image --frozen"),
        "sbom": step("sbom", f"pipeline sbom {w}/image -o {w}/sbom.json"),
        "scan": step("scan", f"""
pipeline scan {w}/image --env "{wp('scan-env')}" --format cosign-vuln -o {w}/vuln.json
"""),
        "provenance": step("provenance", f"pipeline provenance {w}/image -o {w}/provenance.json"),
        "push-image": step("push-image", registry_flags() + f"""
mkdir -p {w}/outputs
pipeline push {w}/image "{wp('repository')}:{wp('git-revision')}" "${{flags[@]}}" \\
    > {w}/outputs/image-digest
""", outputs={"digest": f"{w}/outputs/image-digest"}),
        "push-model": step("push-model", registry_flags() + f"""
mkdir -p {w}/outputs
pipeline push-model {w}/model.sealed "{wp('model-repository')}:{wp('git-revision')}" \\
    "${{flags[@]}}" > {w}/outputs/model-digest
""", outputs={"digest": f"{w}/outputs/model-digest"}),
        "sign-image": step("sign-image", registry_flags() + f"""
pipeline sign "{wp('repository')}@{{{{inputs.parameters.digest}}}}" --key {SIGNING_KEY} \\
    "${{flags[@]}}"
""", inputs=("digest",), secrets=(signing_volume(),)),
        "verify": step("verify", registry_flags() + f"""
ref="{wp('repository')}@{{{{inputs.parameters.digest}}}}"
mkdir -p {w}/evidence
pipeline verify "$ref" --key {SIGNING_PUB} "${{flags[@]}}" --json \\
    > {w}/evidence/image-signature.json
for kind in slsaprovenance cyclonedx vuln; do
  pipeline verify-attestation "$ref" --type "$kind" --key {SIGNING_PUB} "${{flags[@]}}" \\
      --json > "{w}/evidence/attestation-$kind.json"
done
""", inputs=("digest",), secrets=(signing_volume(),)),
        "policy-check": step("policy-check", registry_flags() + f"""
repository="{wp('repository')}"
model="{wp('model-repository')}"
values=(--set-string "image.repository=$repository"
        --set-string "image.digest={{{{inputs.parameters.digest}}}}"
        --set-string "model.repository=$model"
        --set-string "model.digest={{{{inputs.parameters.model-digest}}}}")
pipeline chart render "{w}/src/{wp('chart')}" -o {w}/rendered.yaml "${{values[@]}}"
PIPELINE_RELEASE_PUBLIC_KEY={SIGNING_PUB} pipeline policy check "{w}/src/{wp('chart')}" \\
    "${{values[@]}}" --verify-images --image-policy "{w}/src/{wp('image-policy')}" \\
    "${{flags[@]}}" --format sarif -o {w}/policy.sarif
""", inputs=("digest", "model-digest"), secrets=(signing_volume(),)),
        "record-release": step("record-release", gitops_checkout() + f"""
executor=argo
run_url="{wp('run-url')}"
if [ -n "${{PIPELINE_RUN_DIR:-}}" ]; then
  executor=local
  run_url="file://$PIPELINE_RUN_DIR/run.json"
fi
pipeline release record --gitops {GITOPS} --workspace {w} \\
    --image "{wp('repository')}@{{{{inputs.parameters.digest}}}}" \\
    --model "{wp('model-repository')}@{{{{inputs.parameters.model-digest}}}}" \\
    --git-repo "{wp('git-repo')}" --revision "$(cat {w}/revision)" \\
    --run-name "{{{{workflow.name}}}}" --run-uid "{{{{workflow.uid}}}}" \\
    --executor "$executor" --run-url "$run_url"
""", inputs=("digest", "model-digest")),
        "promote": step("promote", registry_flags() + f"""
extra=()
read -r -a extra <<< "{wp('promote-flags')}" || true
if [ ${{#extra[@]}} -eq 0 ] && [ "{wp('promote-local')}" != "true" ]; then
  echo "promote: skipped, nothing promoted: no analysis target (set the parameter" \\
       "promote-flags: --prometheus URL on a cluster, --local --stable-url URL" \\
       "--canary-url URL on one machine; or promote-local=true on the local runner);" \\
       "the release is recorded in the GitOps repository"
  exit 0
fi
export PIPELINE_GITOPS_REMOTE=origin
if [ -f {w}/src/pipeline.yaml ]; then export PIPELINE_CONFIG={w}/src/pipeline.yaml; fi
""" + ENVIRONMENT + EMBEDDED_PROMOTION + f"""
PIPELINE_RELEASE_PUBLIC_KEY={SIGNING_PUB} pipeline promote --gitops {GITOPS} --env "$env" \\
    --image "{wp('repository')}@{{{{inputs.parameters.digest}}}}" \\
    --model "{wp('model-repository')}@{{{{inputs.parameters.model-digest}}}}" \\
    --image-policy "{w}/src/{wp('image-policy')}" --trust {SIGNING_PUB} \\
    --chart "{w}/src/{wp('chart')}" "${{flags[@]}}" "${{extra[@]}}"
""", inputs=("digest", "model-digest"), secrets=(signing_volume(), kek_volume())),
    }
    for name, kind, predicate in ATTESTATIONS:
        t[f"attest-{name}"] = step(f"attest-{name}", registry_flags() + f"""
pipeline attest "{wp('repository')}@{{{{inputs.parameters.digest}}}}" --type {kind} \\
    --predicate {w}/{predicate} --key {SIGNING_KEY} "${{flags[@]}}"
""", inputs=("digest",), secrets=(signing_volume(),))
    return t


def build() -> WorkflowTemplate:
    """The ``release`` WorkflowTemplate (see the module docstring for its DAG)."""
    image_digest = "{{tasks.push-image.outputs.parameters.digest}}"
    model_digest = "{{tasks.push-model.outputs.parameters.digest}}"
    with WorkflowTemplate(
        name="release",
        entrypoint="release",
        arguments=[Parameter(name=k, value=v) for k, v in PARAMETERS.items()],
        volume_claim_templates=[workspace_claim()],
        labels={"app.kubernetes.io/part-of": "secure-model-pipeline"},
    ) as template:
        t = _templates()
        with DAG(name="release"):
            checkout = t["checkout"](name="checkout")
            seal = t["seal-model"](name="seal-model")
            image = t["build"](name="build")
            checkout >> [seal, image]
            sbom = t["sbom"](name="sbom")
            scan = t["scan"](name="scan")
            provenance = t["provenance"](name="provenance")
            push_image = t["push-image"](name="push-image")
            image >> [sbom, scan, provenance, push_image]
            push_model = t["push-model"](name="push-model")
            seal >> push_model
            sign = t["sign-image"](name="sign-image", arguments={"digest": image_digest})
            push_image >> sign
            predicates = {"provenance": provenance, "sbom": sbom, "vuln": scan}
            attests = []
            for name, _, _ in ATTESTATIONS:
                attest = t[f"attest-{name}"](name=f"attest-{name}",
                                             arguments={"digest": image_digest})
                [push_image, predicates[name]] >> attest
                attests.append(attest)
            verify = t["verify"](name="verify", arguments={"digest": image_digest})
            [sign, *attests] >> verify
            policy = t["policy-check"](name="policy-check", arguments={
                "digest": image_digest, "model-digest": model_digest})
            [verify, push_model] >> policy
            digests = {"digest": image_digest, "model-digest": model_digest}
            record = t["record-release"](name="record-release", arguments=digests)
            promote = t["promote"](name="promote", arguments=digests)
            policy >> record >> promote
    return template
