"""The expr-lang subset of Argo Rollouts' conditions: parser, evaluator, refusals.

Property tests (hypothesis): generated expressions evaluate as a reference does, with
expr-lang's precedence; no text makes the parser or the evaluator fail other than with
their documented errors; the chart's conditions never pass on no data or NaN.
"""

from __future__ import annotations

import math
import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.release.expr import ExprError, parse

CHART_GUARD = "len(result) > 0 && !isNaN(result[0]) && "
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@pytest.mark.parametrize(("text", "result", "expected"), [
    ("result[0] >= 0.99", [0.995], True),
    ("result[0] >= 0.99", [0.5], False),
    ("len(result) > 0 && result[0] >= 0.99", [], False),
    ("isNaN(result[0])", [math.nan], True),
    ("isNaN(result)", math.nan, True),  # a scalar result
    ("result[-1] < 1", [5.0, 0.5], True),
    ("result[0] - result[1] <= 0.1", [1.0, 0.95], True),
    ("asInt(result[0]) == 3", [3.7], True),
    ("asFloat(2) / 4 == 0.5", [], True),
    ("1 / 0 > 1e308", [], True),  # Go float division: +Inf
    ("isNaN(0 / 0)", [], True),
    ("isInf(-1 / 0, -1) and not isInf(-1 / 0, 1)", [], True),
    ("7 % 3 == 1 && -7 % 3 == -1", [], True),  # Go's %: the sign of the dividend
    ("abs(-2) == 2", [], True),
    ("!true == false", [], True),  # (!true) == false, expr-lang's precedence
    ("1 + 2 * 3 == 7 || false", [], True),
    ("1_000 == 1000 and 1e3 == 1000", [], True),
    ("result[0] == result[0]", [math.nan], False),  # NaN compares false, as in Go
])
def test_conditions_evaluate_as_expr_lang(text: str, result: object, expected: bool) -> None:
    assert parse(text)(result) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [
    "result.value > 1",                      # member access
    "result[0] > 1 ? true : false",          # ternary
    "result[0] in [1, 2]",                   # in, array literals
    "all(result, {# > 1})",                  # closures
    "max(result) > 1",                       # unsupported builtin
    "foo > 1",                               # unknown variable
    "result[0] ** 2 > 1",                    # power
    "result[0] > 1 < 2",                     # chained comparison (a type error in expr)
    "'a' == 'a'",                            # strings
    "result[0] >= 0.99 &&",                  # truncated
    "",
    "len(result, 1) > 0",                    # arity
])
def test_anything_outside_the_subset_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="condition"):
        parse(text)


@pytest.mark.parametrize(("text", "result"), [
    ("result[0] >= 0.99", []),                # index out of range
    ("len(result) > 0", 0.5),                 # len of a scalar
    ("!result[0]", [1.0]),                    # ! of a number
    ("result[0] && true", [1.0]),             # && of a number
    ("1 % 0 == 0", []),
    ("result[0]", [1.0]),                     # not a bool
    ("true + 1 > 0", []),
])
def test_evaluation_errors_are_expr_errors(text: str, result: object) -> None:
    with pytest.raises(ExprError):
        parse(text)(result)  # type: ignore[arg-type]


def test_short_circuit_guards_an_empty_result() -> None:
    assert parse("len(result) > 0 && result[0] > 1")([]) is False
    assert parse("len(result) == 0 || result[0] > 1")([]) is True


# --------------------------------------------------------------------------- properties

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}


@st.composite
def arithmetic(draw: st.DrawFn, depth: int = 3) -> str:
    """Integer arithmetic without parentheses: precedence decides, as in Python."""
    terms = [str(draw(st.integers(-50, 50))) for _ in range(draw(st.integers(1, 5)))]
    ops = [draw(st.sampled_from(sorted(_OPS))) for _ in terms[1:]]
    text = terms[0]
    for op, term in zip(ops, terms[1:], strict=True):
        text += f" {op} {term}"
    return text


@given(arithmetic(), st.sampled_from(sorted(_CMP)), arithmetic())
def test_arithmetic_and_comparison_follow_precedence(left: str, cmp: str, right: str) -> None:
    expected = eval(f"({left}) {cmp} ({right})")  # noqa: S307 - integers and operators only
    assert parse(f"{left} {cmp} {right}")([]) is expected


@given(st.lists(st.booleans(), min_size=1, max_size=6),
       st.lists(st.sampled_from(["&&", "||"]), min_size=5, max_size=5),
       st.lists(st.booleans(), min_size=6, max_size=6))
def test_boolean_precedence_and_negation(values: list[bool], ops: list[str],
                                         negate: list[bool]) -> None:
    """``&&`` binds tighter than ``||``; ``!`` applies to the operand it precedes."""
    text, python = [], []
    for i, value in enumerate(values):
        if i:
            text.append(ops[i - 1])
            python.append("and" if ops[i - 1] == "&&" else "or")
        word = "true" if value else "false"
        text.append(("!" if negate[i] else "") + word)
        python.append(("(not " if negate[i] else "(") + str(value) + ")")
    assert parse(" ".join(text))([]) is eval(" ".join(python))  # noqa: S307


@given(st.lists(floats, max_size=4), st.floats(0, 1), st.sampled_from([">=", "<="]))
def test_chart_conditions_never_pass_on_no_data_or_nan(result: list[float], limit: float,
                                                      op: str) -> None:
    condition = parse(f"{CHART_GUARD}result[0] {op} {limit!r}")
    verdict = condition(result)
    if not result or math.isnan(result[0]):
        assert verdict is False
    else:
        assert verdict is _CMP[op](result[0], limit)


@given(st.text(max_size=60))
def test_any_text_is_parsed_or_refused_cleanly(text: str) -> None:
    try:
        condition = parse(text)
    except ConfigError:
        return
    try:
        condition([1.0, math.nan])
    except ExprError:
        pass


@given(st.text(alphabet="result[]0123456789.()!&|=<>+-*/% lenisNaN,", max_size=40),
       st.one_of(st.lists(floats, max_size=3), floats))
def test_operator_soup_never_escapes_the_documented_errors(text: str, result: object) -> None:
    try:
        condition = parse(text)
    except ConfigError:
        return
    try:
        assert isinstance(condition(result), bool)  # type: ignore[arg-type]
    except ExprError:
        pass
