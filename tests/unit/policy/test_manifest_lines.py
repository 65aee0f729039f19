"""Each manifest knows the line it starts on: reports (text, GitHub ``line=``, SARIF
``startLine``) point at it. Property: whatever comments, blank lines and empty documents
surround the objects, the line is the one holding the object's first key."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.policy.manifests import is_kubernetes_yaml, parse_manifests

_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
_PAD = st.lists(st.sampled_from(["", "# a comment", "   # indented comment"]), max_size=3)


@settings(max_examples=150, deadline=None)
@given(docs=st.lists(st.tuples(_PAD, st.one_of(st.none(), _NAME), st.booleans()),
                     min_size=1, max_size=6))
def test_every_object_starts_on_its_first_key_line(docs: list) -> None:  # type: ignore[type-arg]
    lines: list[str] = []
    expected: list[tuple[int, int, str]] = []
    for index, (pad, name, flow) in enumerate(docs):
        lines.append("---")
        lines += pad
        if name is None:
            continue  # an empty document: counted, never an object
        expected.append((index, len(lines) + 1, name))
        if flow:
            lines.append(f"{{apiVersion: v1, kind: ConfigMap, metadata: {{name: {name!r}}}}}")
        else:
            lines += ["apiVersion: v1", "kind: ConfigMap", "metadata:", f"  name: {name!r}"]
    got = parse_manifests("\n".join(lines) + "\n", "f.yaml")
    assert [(m.index, m.line, m.name) for m in got] == expected


def test_non_manifest_yaml_is_told_apart() -> None:
    assert not is_kubernetes_yaml("on: [push]\njobs: {}\n")
    assert not is_kubernetes_yaml("- a\n- b\n")
    assert is_kubernetes_yaml("apiVersion: v1\nkind: Pod\n")
    assert is_kubernetes_yaml("a: [\n")  # malformed: not skipped, refused by the parser
