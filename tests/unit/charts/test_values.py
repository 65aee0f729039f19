"""Chart values compose as Helm composes them: files in order, then --set/--set-string/--set-file.

The expressions are parsed by the Helm engine itself (helm-python-sdk's strvals); these
tests pin the typing a user relies on (``rollout.enabled=true`` is a boolean, not the
string the old render command passed) and the layer order, and refuse bad input by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.charts import ValueOptions, load_values
from pipeline.charts.values import merge
from pipeline.errors import EXIT_INPUT, InputError


def test_set_types_values_as_helm_does() -> None:
    values = load_values(ValueOptions(set_values=[
        "replicas=3", "rollout.enabled=true", "ports={80,443}", "labels.a\\.b=x",
        "note=one\\,two", "gone=null", "hex=0x1f", "big=12345678901234567890",
    ]))
    assert values == {
        "replicas": 3, "rollout": {"enabled": True}, "ports": [80, 443],
        "labels": {"a.b": "x"}, "note": "one,two", "gone": None, "hex": "0x1f",
        "big": "12345678901234567890",
    }


def test_set_string_keeps_strings_and_wins_over_set() -> None:
    values = load_values(ValueOptions(set_values=["a=1", "b=true"], set_string=["a=1"]))
    assert values == {"a": "1", "b": True}


def test_files_merge_left_to_right_then_set(tmp_path: Path) -> None:
    first = tmp_path / "first.yaml"
    second = tmp_path / "second.yaml"
    first.write_text("image: {repository: r, digest: d1}\nlist: [1, 2]\nkeep: yes\n")
    second.write_text("image: {digest: d2}\n")
    values = load_values(ValueOptions(values_files=[first, second],
                                      set_values=["list[1]=9", "image.pullPolicy=Always"]))
    assert values["image"] == {"repository": "r", "digest": "d2", "pullPolicy": "Always"}
    assert values["list"] == [1, 9]  # a[1]=x sets that element, as Helm's in-place set
    assert values["keep"] is True  # parsed by Helm's own YAML reader (YAML 1.1 booleans)


def test_set_file_reads_the_file(tmp_path: Path) -> None:
    pem = tmp_path / "trust.pub"
    pem.write_text("-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n")
    values = load_values(ValueOptions(set_file=[f"trust.publicKey={pem}"]))
    assert values == {"trust": {"publicKey": pem.read_text()}}


@pytest.mark.parametrize("text, what", [
    ("- a\n- b\n", "the top level is a list"),
    ("3\n", "the top level is a int"),
    ("just text\n", "the top level is a str"),
])
def test_a_values_file_of_the_wrong_type_is_refused(tmp_path: Path, text: str,
                                                    what: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_values(ValueOptions(values_files=[path]))
    assert str(path) in str(caught.value) and what in str(caught.value)
    assert "expected a mapping" in str(caught.value)
    assert caught.value.exit_code == EXIT_INPUT


def test_malformed_values_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("a: [1\n")
    with pytest.raises(InputError, match=r"values\.yaml: .*line 1"):
        load_values(ValueOptions(values_files=[path]))


@pytest.mark.parametrize("flag, options", [
    ("--set", ValueOptions(set_values=["novalue"])),
    ("--set-string", ValueOptions(set_string=["novalue"])),
    ("--set-file", ValueOptions(set_file=["k=/nonexistent/file"])),
])
def test_a_bad_flag_is_named(flag: str, options: ValueOptions) -> None:
    with pytest.raises(InputError, match=f"^{flag} "):
        load_values(options)


def test_a_missing_values_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_values(ValueOptions(values_files=[tmp_path / "absent.yaml"]))


_KEY = st.text(alphabet="abcdefghij", min_size=1, max_size=5)


@settings(max_examples=30, deadline=None)
@given(path=st.lists(_KEY, min_size=1, max_size=4),
       value=st.one_of(st.integers(-(2**62), 2**62), st.booleans(),
                       st.text(alphabet="klmnopqrstuvwxyz", min_size=1, max_size=8)))
def test_any_nested_set_round_trips(path: list[str], value: object) -> None:
    """Property: ``--set a.b.c=V`` is ``{a: {b: {c: V}}}`` with V typed by Helm's rules."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    got = load_values(ValueOptions(set_values=[".".join(path) + "=" + text]))
    for key in path:
        got = got[key]
    if isinstance(value, str) and value in ("true", "false", "null"):
        return
    assert got == value


_VALUES = st.recursive(
    st.one_of(st.integers(), st.text(max_size=3), st.none()),
    lambda inner: st.dictionaries(_KEY, inner, max_size=3), max_leaves=8)


@settings(max_examples=100, deadline=None)
@given(base=st.dictionaries(_KEY, _VALUES, max_size=4),
       layer=st.dictionaries(_KEY, _VALUES, max_size=4))
def test_merge_keeps_what_the_layer_does_not_set(base: dict, layer: dict) -> None:
    """Property: every key below survives unless the layer sets it; layer scalars win."""
    import copy

    merged = merge(copy.deepcopy(base), layer)
    for key, value in layer.items():
        if not isinstance(value, dict) or not isinstance(base.get(key), dict):
            assert merged[key] == value
    for key in base.keys() - layer.keys():
        assert merged[key] == base[key]
