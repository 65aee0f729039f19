"""The optimistic merge behind the cosign tags and the fallback index, on a store whose
writes a simulated concurrent writer overwrites."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.signing import _attachments
from pipeline.signing._attachments import attachment_manifest, layer_key, optimistic


class RacyStore:
    """A tag: ``lose`` of our writes are overwritten at once by a writer that read earlier."""

    def __init__(self, lose: int) -> None:
        self.value: list[str] = ["theirs"]
        self.lose = lose
        self.writes = 0

    def read(self) -> list[str]:
        return list(self.value)

    def write(self, merged: list[str]) -> None:
        self.writes += 1
        if self.lose > 0:
            self.lose -= 1
            self.value = ["theirs", "other"]  # the racing writer's stale merge wins
        else:
            self.value = merged


def _merge(current: list[str]) -> list[str] | None:
    return None if "ours" in current else [*current, "ours"]


@settings(deadline=None, max_examples=20)
@given(st.integers(min_value=0, max_value=12))
def test_lost_writes_are_merged_again_until_the_attempts_run_out(lose: int) -> None:
    _attachments.MERGE_BACKOFF, saved = 0.0, _attachments.MERGE_BACKOFF
    try:
        tag = RacyStore(lose)
        held = optimistic(tag.read, _merge, tag.write, lambda v: "ours" in v, attempts=8)
    finally:
        _attachments.MERGE_BACKOFF = saved
    assert held == (lose < 8)
    if held:  # nothing the racer wrote is dropped by our merge
        assert tag.value == ["theirs", "other", "ours"] if lose else ["theirs", "ours"]
        assert tag.writes == lose + 1
    else:
        assert tag.writes == 8


def test_nothing_is_written_when_the_entry_is_there() -> None:
    tag = RacyStore(0)
    tag.value = ["theirs", "ours"]
    assert optimistic(tag.read, _merge, tag.write, lambda v: "ours" in v)
    assert tag.writes == 0


def test_attachment_manifest_is_a_pure_function_of_subject_and_layer() -> None:
    subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": "sha256:" + "a" * 64, "size": 123}
    layer = {"mediaType": "application/vnd.dsse.envelope.v1+json", "size": 10,
             "digest": "sha256:" + "b" * 64,
             "annotations": {"predicateType": "https://slsa.dev/provenance/v1",
                             "dev.cosignproject.cosign/signature": ""}}
    reordered = dict(reversed(list(layer.items())))
    assert attachment_manifest(subject, layer) == attachment_manifest(subject, reordered)
    assert layer_key(layer) == ("sha256:" + "b" * 64, "")
