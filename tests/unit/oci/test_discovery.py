"""Discovery tag names: unique per attachment, within 128 characters, never confused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.oci import discovery as disc

digests = st.binary(min_size=1, max_size=64).map(
    lambda b: "sha256:" + hashlib.sha256(b).hexdigest())


@given(digests, digests, st.sampled_from(["sig", "att"]))
def test_discovery_tag_round_trips_and_fits(subject: str, attachment: str, kind: str) -> None:
    tag = disc.discovery_tag(subject, kind, attachment)
    assert len(tag) <= 128
    assert disc.attachment_tags([tag, "latest"], subject, kind) == [tag]
    assert disc.tag_matches(tag, attachment)


@given(digests, digests, digests)
def test_other_subjects_kinds_and_digests_are_not_matched(subject: str, other: str,
                                                          attachment: str) -> None:
    tag = disc.discovery_tag(subject, "sig", attachment)
    if other != subject:
        assert disc.attachment_tags([tag], other, "sig") == []
    assert disc.attachment_tags([tag], subject, "att") == []
    # The cosign tag and the fallback index are not discovery tags.
    assert disc.attachment_tags([subject.replace(":", "-") + ".sig",
                                 disc.fallback_tag(subject)], subject, "sig") == []
    if other != attachment:
        assert not disc.tag_matches(tag, other)


@given(st.text(max_size=200))
def test_arbitrary_tags_never_match_wrongly(tag: str) -> None:
    subject = "sha256:" + "a" * 64
    found = disc.attachment_tags([tag], subject, "sig")
    assert found in ([], [tag])
    if found:
        assert tag.startswith("sha256-" + "a" * 64 + ".sig.") and len(tag) == 124


def test_bad_kind_is_refused() -> None:
    with pytest.raises(InputError):
        disc.discovery_tag("sha256:" + "a" * 64, "Sig!", "sha256:" + "b" * 64)
