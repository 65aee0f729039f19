"""Argo's ``{{...}}`` parameter expressions, as far as the workflows in workflows/ use them.

Why strict: an expression left unresolved would run a command with a literal ``{{...}}``
in it (a wrong registry reference, a wrong path); an unknown name is a ConfigError instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pipeline.errors import ConfigError

_EXPR = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


def substitute(text: str, values: Mapping[str, str], *, where: str) -> str:
    """Replace every ``{{name}}`` in ``text`` by ``values[name]``.

    ``values`` holds fully qualified names (``workflow.parameters.x``,
    ``inputs.parameters.x``, ``tasks.T.outputs.parameters.y``). Expressions whose scope is
    not in ``values`` at all are left alone only if no key shares their first two parts,
    so a later pass can resolve them; a known scope with an unknown name is an error.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        scope = ".".join(name.split(".")[:2])
        if any(key.startswith(scope + ".") for key in values):
            raise ConfigError(f"{where}: unknown parameter {{{{{name}}}}}")
        return match.group(0)

    return _EXPR.sub(replace, text)


def unresolved(text: str) -> list[str]:
    """The expressions still in ``text`` (each one is an error before running)."""
    return _EXPR.findall(text)
