"""Argo Rollouts' analysis conditions (expr-lang/expr), for the subset promote supports.

Why a parser of our own: ``successCondition``/``failureCondition`` are the definition of
a healthy canary; evaluating them with Python's ``eval`` would be unsafe, and a silently
ignored condition would pass a canary that Argo Rollouts fails. So a condition is parsed
once, before the first step, into a small tree; anything outside the subset below is
refused with a :class:`~pipeline.errors.ConfigError` naming what was found, never
skipped. Semantics follow expr-lang as Argo Rollouts configures it:

* literals: integers, floats (``0.99``, ``1e-3``), ``true``, ``false``; the variable
  ``result`` (the query's value: a list of floats for a vector, a float for a scalar);
* ``result[i]`` (negative ``i`` counts from the end; out of range is an error);
* ``len(x)``, ``isNaN(x)``, ``isInf(x, sign)``, ``asInt(x)``, ``asFloat(x)``, ``abs(x)``;
* ``+ - * / %``, unary ``-``/``+``; ``/`` divides as floats (Go: ``x/0`` is ±Inf,
  ``0/0`` NaN); ``%`` on integers only;
* ``== != < <= > >=`` (NaN compares false, as in Go); ``&& || !`` and ``and or not``,
  short-circuit, on booleans only;
* precedence and associativity are expr-lang's operator table: ``!`` binds tighter than
  comparisons and ``+``, looser than ``*``; unary ``-`` tightest; a chained comparison
  (``a < b < c``, a type error in expr-lang) is refused.

An evaluation that goes wrong (``result[0]`` of an empty result, ``!`` of a number)
raises :class:`ExprError`: Argo Rollouts records such a measurement as an Error, never
as a success.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from pipeline.errors import ConfigError

MAX_LENGTH = 2000
MAX_DEPTH = 64


class ExprError(Exception):
    """An evaluation error (Argo Rollouts: the measurement's phase is Error)."""


@dataclass(frozen=True)
class Num:
    value: int | float


@dataclass(frozen=True)
class Bool:
    value: bool


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Index:
    target: Node
    index: Node


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Num | Bool | Var | Index | Call | Unary | Binary

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%<>!()\[\],])
""", re.VERBOSE)
_WORD_OPS = {"and": "&&", "or": "||", "not": "!"}
_COMPARE = ("==", "!=", "<", "<=", ">", ">=")
# expr-lang's operator table (parser/operator): higher binds tighter.
_BINARY = {"||": 10, "&&": 15, "==": 20, "!=": 20, "<": 20, "<=": 20, ">": 20, ">=": 20,
           "+": 30, "-": 30, "*": 60, "/": 60, "%": 60}
_UNARY = {"!": 50, "-": 90, "+": 90}
_VARIABLES = ("result",)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConfigError(f"condition {text!r}: unsupported character {text[pos]!r} at "
                              f"{pos}, outside the subset of expr-lang that promote "
                              "evaluates (numbers, result, len/isNaN/isInf/asInt/asFloat/abs, "
                              "[ ], + - * / %, comparisons, && || !)")
        kind = m.lastgroup or ""
        if kind != "space":
            value = m.group()
            if kind == "name" and value in _WORD_OPS:
                kind, value = "op", _WORD_OPS[value]
            out.append((kind, value, pos))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.depth = 0

    def refuse(self, what: str) -> ConfigError:
        _kind, value, at = self.tokens[self.pos]
        found = repr(value) if value else "the end"
        return ConfigError(f"condition {self.text!r}: {what}, found {found} at {at} "
                           "(outside the subset of expr-lang that promote evaluates)")

    def peek(self) -> tuple[str, str]:
        kind, value, _ = self.tokens[self.pos]
        return kind, value

    def take(self, value: str) -> bool:
        if self.peek() == ("op", value):
            self.pos += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.take(value):
            raise self.refuse(f"expected {value!r}")

    def parse(self) -> Node:
        node = self.expression(0)
        if self.peek()[0] != "end":
            raise self.refuse("expected the end of the condition")
        return node

    def _nest(self, parse: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.refuse(f"nested deeper than {MAX_DEPTH}")
        try:
            return parse()
        finally:
            self.depth -= 1

    def or_(self) -> Node:
        return self.expression(0)

    def expression(self, precedence: int) -> Node:
        """expr-lang's precedence climbing (parser.parseExpression), left-associative."""
        node = self.unary()
        while True:
            kind, value = self.peek()
            op = _BINARY.get(value) if kind == "op" else None
            if op is None or op < precedence:
                return node
            self.pos += 1
            right = self._nest(partial(self.expression, op + 1))
            node = Binary(value, node, right)
            if value in _COMPARE:
                after_kind, after = self.peek()
                if after_kind == "op" and after in _COMPARE:
                    raise self.refuse("chained comparison")

    def unary(self) -> Node:
        kind, value = self.peek()
        if kind == "op" and value in _UNARY:
            self.pos += 1
            operand = self._nest(partial(self.expression, _UNARY[value]))
            return Unary(value, operand)
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while self.take("["):
            index = self._nest(self.or_)
            self.expect("]")
            node = Index(node, index)
        return node

    def primary(self) -> Node:
        kind, value = self.peek()
        if kind == "number":
            self.pos += 1
            return Num(_number(value, self))
        if kind == "name":
            self.pos += 1
            if value in ("true", "false"):
                return Bool(value == "true")
            if self.take("("):
                if value not in FUNCTIONS:
                    self.pos -= 2
                    raise self.refuse(f"unsupported function (supported: "
                                      f"{', '.join(sorted(FUNCTIONS))})")
                args: list[Node] = []
                if not self.take(")"):
                    args.append(self._nest(self.or_))
                    while self.take(","):
                        args.append(self._nest(self.or_))
                    self.expect(")")
                low, high = _ARITY[value]
                if not low <= len(args) <= high:
                    raise ConfigError(f"condition {self.text!r}: {value}() takes "
                                      f"{low}{'' if low == high else f'..{high}'} argument(s), "
                                      f"got {len(args)}")
                return Call(value, tuple(args))
            if value not in _VARIABLES:
                self.pos -= 1
                raise self.refuse("unsupported name (the only variable is result)")
            return Var(value)
        if self.take("("):
            node = self._nest(self.or_)
            self.expect(")")
            return node
        raise self.refuse("expected a number, result, a function call or '('")


def _number(text: str, parser: _Parser) -> int | float:
    clean = text.replace("_", "")
    try:
        if re.fullmatch(r"\d+", clean):
            return int(clean)
        return float(clean)
    except ValueError:
        raise parser.refuse("malformed number") from None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _float(name: str, x: Any) -> float:
    if not _is_number(x):
        raise ExprError(f"{name}() needs a number, got {_type(x)}")
    return float(x)


def _type(x: Any) -> str:
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float64"
    if isinstance(x, (list, tuple)):
        return "array"
    return type(x).__name__


def _len(x: Any) -> int:
    if not isinstance(x, (list, tuple)):
        raise ExprError(f"len() of {_type(x)} (a scalar result has no length)")
    return len(x)


def _is_inf(x: Any, sign: Any = 0) -> bool:
    value = _float("isInf", x)
    s = int(_float("isInf", sign))
    return math.isinf(value) and (s == 0 or (s > 0) == (value > 0))


def _as_int(x: Any) -> int:
    value = _float("asInt", x)
    if math.isnan(value) or math.isinf(value):
        raise ExprError(f"asInt() of {value}")
    return int(value)


def _abs(x: Any) -> int | float:
    if not _is_number(x):
        raise ExprError(f"abs() needs a number, got {_type(x)}")
    return abs(x)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": _len,
    "isNaN": lambda x: math.isnan(_float("isNaN", x)),
    "isInf": _is_inf,
    "asInt": _as_int,
    "asFloat": lambda x: _float("asFloat", x),
    "abs": _abs,
}
_ARITY = {"len": (1, 1), "isNaN": (1, 1), "isInf": (1, 2), "asInt": (1, 1),
          "asFloat": (1, 1), "abs": (1, 1)}


def _arith(op: str, a: Any, b: Any) -> int | float:
    if not (_is_number(a) and _is_number(b)):
        raise ExprError(f"invalid operation: {_type(a)} {op} {_type(b)}")
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        x, y = float(a), float(b)
        if y == 0:
            if math.isnan(x) or x == 0:
                return math.nan
            return math.copysign(math.inf, x) * math.copysign(1.0, y)
        return x / y
    if not (isinstance(a, int) and isinstance(b, int)):
        raise ExprError(f"invalid operation: {_type(a)} % {_type(b)} (integers only)")
    if b == 0:
        raise ExprError("integer divide by zero")
    return int(math.fmod(a, b))  # Go's %: the sign of the dividend


def _compare(op: str, a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b,
                ">": a > b, ">=": a >= b}[op]
    if op in ("==", "!=") and isinstance(a, bool) and isinstance(b, bool):
        return (a == b) == (op == "==")
    raise ExprError(f"invalid operation: {_type(a)} {op} {_type(b)}")


def _bool(op: str, x: Any) -> bool:
    if not isinstance(x, bool):
        raise ExprError(f"invalid operation: {op} on {_type(x)} (needs a bool)")
    return x


def evaluate(node: Node, result: Any) -> Any:
    """The value of ``node`` with ``result`` bound; ExprError when evaluation fails."""
    if isinstance(node, (Num, Bool)):
        return node.value
    if isinstance(node, Var):
        return result
    if isinstance(node, Index):
        target, index = evaluate(node.target, result), evaluate(node.index, result)
        if not isinstance(target, (list, tuple)):
            raise ExprError(f"cannot index {_type(target)}")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ExprError(f"index must be an integer, got {_type(index)}")
        position = index + len(target) if index < 0 else index
        if not 0 <= position < len(target):
            raise ExprError(f"index out of range: {index} (result has {len(target)})")
        return target[position]
    if isinstance(node, Call):
        return FUNCTIONS[node.name](*(evaluate(a, result) for a in node.args))
    if isinstance(node, Unary):
        value = evaluate(node.operand, result)
        if node.op == "!":
            return not _bool("!", value)
        if not _is_number(value):
            raise ExprError(f"invalid operation: {node.op}{_type(value)}")
        return -value if node.op == "-" else value
    if node.op == "&&":
        return _bool("&&", evaluate(node.left, result)) and _bool("&&",
                                                                  evaluate(node.right, result))
    if node.op == "||":
        return _bool("||", evaluate(node.left, result)) or _bool("||",
                                                                 evaluate(node.right, result))
    left, right = evaluate(node.left, result), evaluate(node.right, result)
    if node.op in _COMPARE:
        return _compare(node.op, left, right)
    return _arith(node.op, left, right)


@dataclass(frozen=True)
class Condition:
    """A parsed successCondition/failureCondition: evaluate it against a query's result."""

    text: str
    tree: Node

    def __call__(self, result: float | Sequence[float]) -> bool:
        """True/False; ExprError when it cannot be evaluated or is not a bool."""
        value = evaluate(self.tree, list(result) if isinstance(result, (list, tuple))
                         else result)
        if not isinstance(value, bool):
            raise ExprError(f"condition {self.text!r} gave {_type(value)}, not a bool")
        return value

    def threshold(self) -> tuple[str, float] | None:
        """``(op, number)`` of the last ``result[0] OP number`` it checks, for messages
        such as ``success rate 0.000 < 0.990``; None when it has no such comparison."""
        found: tuple[str, float] | None = None
        stack: list[Node] = [self.tree]
        while stack:
            node = stack.pop()
            if isinstance(node, Binary) and node.op in _COMPARE[2:] \
                    and isinstance(node.left, Index) and isinstance(node.left.target, Var):
                limit = _constant(node.right)
                if limit is not None:
                    found = found or (node.op, limit)
            if isinstance(node, Binary):
                stack += [node.left, node.right]
            elif isinstance(node, Unary):
                stack.append(node.operand)
        return found


def _constant(node: Node) -> float | None:
    """A number literal, possibly signed (``-0.01`` parses as unary minus)."""
    if isinstance(node, Num):
        return float(node.value)
    if isinstance(node, Unary) and node.op in ("-", "+"):
        inner = _constant(node.operand)
        return None if inner is None else (-inner if node.op == "-" else inner)
    return None


def parse(text: str) -> Condition:
    """Parse one condition; ConfigError (exit 3) for anything outside the subset."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"condition {text!r}: empty")
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"condition longer than {MAX_LENGTH} characters")
    return Condition(text, _Parser(text).parse())


__all__ = ["FUNCTIONS", "Condition", "ExprError", "evaluate", "parse"]
