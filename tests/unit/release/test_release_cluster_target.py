"""A first release has no stable pod set: one step, 100 %, as Argo Rollouts' initial
deploy, whatever the rendered steps (they are for a canary next to a stable set)."""

from __future__ import annotations

from pipeline.release.canary import CanaryStage
from pipeline.release.cluster_target import initial_definition
from tests.support.canary import definition


def test_first_release_goes_straight_to_100() -> None:
    _rendered, rendered = definition("prod")
    assert rendered.weights == (50, 100) and rendered.steps
    first = initial_definition(rendered)
    assert first.weights == (100,) and first.steps == ()
    assert first.stages == (CanaryStage(100),)
    assert (first.rollout, first.canary_service, first.stable_service) == (
        rendered.rollout, rendered.canary_service, rendered.stable_service)
