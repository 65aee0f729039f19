"""The CEL semantics the policies rely on, and the engine's fail-closed handling.

Each test pins one corner of Kubernetes CEL as cel-cpp implements it: if a library
upgrade changed any of them, a default policy could silently start passing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.policy.cel import activation, compile_expression
from pipeline.policy.evaluate import evaluate
from pipeline.policy.vap import load_policies, parse_binding, parse_policy


def run(expression: str, obj: Any) -> Any:
    data = {"object": obj, "oldObject": None, "request": {}, "params": None, "variables": {}}
    return compile_expression(expression, "test").evaluate(activation(data))


def test_has_on_missing_field_is_false() -> None:
    assert run("has(object.metadata.labels)", {"metadata": {}}).value is False


def test_has_on_missing_parent_is_an_error_not_false() -> None:
    outcome = run("has(object.spec.template.spec)", {"spec": {}})
    assert not outcome.ok and "template" in outcome.error


def test_optional_chain_gives_default_on_missing_parents() -> None:
    expr = "object.?spec.?securityContext.?runAsNonRoot.orValue(false)"
    assert run(expr, {}).value is False
    assert run(expr, {"spec": {"securityContext": {"runAsNonRoot": True}}}).value is True
    assert run("object.?metadata.?labels[?'a/b'].orValue('x')", {"metadata": {}}).value == "x"


def test_error_inside_all_is_an_error() -> None:
    outcome = run("object.items.all(i, i.image.contains('@'))", {"items": [{"image": "a@b"}, {}]})
    assert not outcome.ok


def test_exists_absorbs_an_error_only_when_another_element_is_true() -> None:
    # CEL's commutative logic: true || error == true; false || error == error.
    assert run("object.items.exists(i, i.x == 1)", {"items": [{}, {"x": 1}]}).value is True
    assert not run("object.items.exists(i, i.x == 1)", {"items": [{}, {"x": 2}]}).ok


def test_strings_extension_split_and_join() -> None:
    assert run("'a@sha256:b'.split('@sha256:')[1]", {}).value == "b"
    assert run("['a', 'b'].join(', ')", {}).value == "a, b"


def test_runtime_errors_are_values_not_exceptions() -> None:
    outcome = run("1 / object.zero", {"zero": 0})
    assert not outcome.ok and "divide by zero" in outcome.error


def test_out_of_range_integer_is_an_error_not_a_crash() -> None:
    assert not run("object.x == 1", {"x": 2**70}).ok


def test_compile_error_is_config_error_naming_label_and_expression() -> None:
    with pytest.raises(ConfigError, match=r"policy x: validations\[0\].*'object\.spec \+'"):
        compile_expression("object.spec +", "policy x: validations[0]")
    with pytest.raises(ConfigError, match="undeclared reference"):
        compile_expression("nosuch.field", "p")
    with pytest.raises(ConfigError, match="no matching overload"):
        compile_expression("!'x'", "p")


# --------------------------------------------------------------------------- policies

def policy_doc(validations: list[dict[str, Any]], variables: list[dict[str, Any]] = (),
               conditions: list[dict[str, Any]] = (), failure: str = "Fail") -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "failurePolicy": failure,
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["configmaps"]}]},
            "matchConditions": list(conditions),
            "variables": list(variables),
            "validations": validations,
        },
    }


BINDING = parse_binding({"metadata": {"name": "b"},
                         "spec": {"policyName": "p", "validationActions": ["Deny"]}}, "t")
CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}


def messages(doc: dict[str, Any], obj: dict[str, Any] = CM) -> list[str]:
    return [f.message for f in evaluate(parse_policy(doc, "t"), BINDING, obj)]


def test_false_uses_message_expression_then_message_then_expression() -> None:
    v = {"expression": "false", "message": "static", "messageExpression": "'dyn ' + object.kind"}
    assert messages(policy_doc([v])) == ["dyn ConfigMap"]
    v["messageExpression"] = "object.nosuch"  # errors: falls back to message
    assert messages(policy_doc([v])) == ["static"]
    assert messages(policy_doc([{"expression": "1 == 2"}])) == ["failed expression: 1 == 2"]


def test_erroring_validation_fails_closed_with_an_errored_message() -> None:
    found = messages(policy_doc([{"expression": "object.spec.x == 1", "message": "m"}]))
    assert len(found) == 1 and found[0].startswith("expression errored:")


def test_failure_policy_ignore_skips_errors_but_not_false() -> None:
    doc = policy_doc([{"expression": "object.spec.x == 1"}, {"expression": "false",
                                                              "message": "no"}],
                     failure="Ignore")
    assert messages(doc) == ["no"]


def test_non_bool_result_is_an_error() -> None:
    found = messages(policy_doc([{"expression": "object.kind"}]))
    assert found and "not bool" in found[0]


def test_match_conditions_skip_error_and_false() -> None:
    deny = [{"expression": "false", "message": "denied"}]
    skip = policy_doc(deny, conditions=[{"name": "c", "expression": "object.kind == 'Pod'"}])
    assert messages(skip) == []
    apply = policy_doc(deny, conditions=[{"name": "c", "expression": "has(object.data)"}])
    assert messages(apply) == ["denied"]
    broken = policy_doc(deny, conditions=[{"name": "c", "expression": "object.spec.x"}])
    assert "matchCondition 'c' errored" in messages(broken)[0]


def test_variables_are_lazy_in_order_and_errors_stay_local() -> None:
    doc = policy_doc(
        [{"expression": "variables.good == '1'", "message": "good"},
         {"expression": "variables.bad == 1", "message": "bad"},
         {"expression": "variables.derived == '1!'", "message": "derived"}],
        variables=[{"name": "good", "expression": "object.data.a"},
                   {"name": "bad", "expression": "object.spec.missing"},
                   {"name": "derived", "expression": "variables.good + '!'"}],
    )
    found = messages(doc)
    assert len(found) == 1 and "variable 'bad' errored" in found[0]


def test_variables_need_declaration_before_use() -> None:
    doc = policy_doc([{"expression": "variables.later"}],
                     variables=[{"name": "first", "expression": "variables.later"},
                                {"name": "later", "expression": "true"}])
    with pytest.raises(ConfigError, match="undeclared.*'later'"):
        parse_policy(doc, "t")


def test_resource_rules_match_kind_and_version() -> None:
    doc = policy_doc([{"expression": "false", "message": "denied"}])
    assert messages(doc, {**CM, "apiVersion": "v2"}) == []
    assert messages(doc, {**CM, "kind": "Secret"}) == []
    assert messages(doc) == ["denied"]


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d: d["spec"].update(paramKind={"kind": "ConfigMap"}), "paramKind"),
    (lambda d: d["spec"].update(validations=[]), "validations"),
    (lambda d: d["spec"].update(failurePolicy="Maybe"), "failurePolicy"),
    (lambda d: d["spec"].pop("matchConstraints"), "matchConstraints"),
    (lambda d: d["spec"]["validations"].append({"expression": "object.("}), r"validations\[1\]"),
])
def test_bad_policies_are_config_errors(mutate: Any, match: str) -> None:
    doc = policy_doc([{"expression": "true"}])
    mutate(doc)
    with pytest.raises(ConfigError, match=match):
        parse_policy(doc, "t")


def test_binding_to_unknown_policy_and_foreign_kind_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n"
        "metadata: {name: b}\nspec: {policyName: nope, validationActions: [Deny]}\n")
    with pytest.raises(ConfigError, match="no policy named 'nope'"):
        load_policies(tmp_path)
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(ConfigError, match="expected admissionregistration"):
        load_policies(tmp_path)
