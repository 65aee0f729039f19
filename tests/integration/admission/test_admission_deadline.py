"""A registry that holds the webhook is answered with a denial that names it, in time.

The API server waits ``timeoutSeconds`` (10 by default) for the webhook; with only a
per-request timeout, retries against a registry that accepts connections and never
answers held a decision for 15 s, and the user saw the API server's timeout instead of
the reason. The decision has one budget (``--registry-timeout``) for all its registry
work, so the denial comes first and says which registry did not answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.admission.decide import Decider
from pipeline.admission.review import parse_review
from pipeline.oci import RegistryOptions
from pipeline.policy.check import DEFAULT_POLICY_DIR
from pipeline.policy.image_policy import ImagePolicy
from pipeline.policy.vap import load_policies
from tests.support import slow_servers

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).parents[2] / "fixtures/admission/recorded-pod-registry-down.json"
API_SERVER_TIMEOUT = 10.0  # the ValidatingWebhookConfiguration's timeoutSeconds


@pytest.mark.parametrize("server", [slow_servers.silent, slow_servers.trickling])
def test_a_registry_that_holds_on_is_denied_by_name_before_the_api_server_gives_up(
    server, tmp_path: Path, keys  # type: ignore[no-untyped-def]
) -> None:
    _, public = keys("release")
    with server() as host:
        policy = tmp_path / "image-policy.yaml"
        policy.write_text(
            "version: 1\ndefault: deny\nrequireDigest: true\nrules:\n"
            f"  - name: adm\n    images: ['{host}/adm/*']\n"
            f"    authorities:\n      - key: {public}\n")
        # What `pipeline admission serve --registry-timeout 2` builds: 5 s per request
        # would have been 3 tries x 5 s; the decision gets 2 s in all.
        decider = Decider(load_policies(DEFAULT_POLICY_DIR), ImagePolicy.load(policy),
                          RegistryOptions(insecure=True, timeout=2.0, retries=2, backoff=0.1),
                          decision_budget=2.0)
        text = FIXTURE.read_text().replace("{{DEAD_REGISTRY}}", host).replace(
            "{{DIGEST_APP}}", "sha256:" + "a" * 64)
        request = parse_review(json.dumps(json.loads(text)))
        start = time.monotonic()
        decision = decider.validate(request)
        elapsed = time.monotonic() - start
    assert not decision.allowed
    reasons = "; ".join(decision.reasons)
    assert f"registry {host} did not answer within 2s" in reasons, reasons
    assert elapsed < API_SERVER_TIMEOUT


def test_serve_uses_registry_timeout_as_the_decision_budget() -> None:
    from click.testing import CliRunner

    from pipeline._cli import admission

    # --registry-timeout's help says it is the decision's budget; --timeout is not offered.
    text = " ".join(CliRunner().invoke(admission.serve_command, ["--help"]).output.split())
    assert "budget of all registry work for one decision" in text
    assert "--timeout" not in text.replace("--registry-timeout", "")
