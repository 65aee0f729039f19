"""The public API is what the facades export; a name that disappears from one fails here.

Every capability and core package has a curated ``__all__`` in its ``__init__``; the
checked-in snapshot (``public_api.json``) records them. Removing or renaming a public
name breaks callers, so it must be a decision: the test fails until the snapshot is
updated with it. New names must be recorded too, so the snapshot stays the whole API:
``python -m tests.unit.project.test_public_api`` rewrites it from the code.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).with_name("public_api.json")
FACADES = (
    "pipeline.oci",
    "pipeline.signing",
    "pipeline.sealing",
    "pipeline.distribution",
    "pipeline.build",
    "pipeline.scan",
    "pipeline.policy",
    "pipeline.admission",
    "pipeline.release",
    "pipeline.workflow",
)


def current() -> dict[str, list[str]]:
    return {name: sorted(importlib.import_module(name).__all__) for name in FACADES}


@pytest.mark.parametrize("facade", FACADES)
def test_no_public_name_disappears(facade: str) -> None:
    recorded = set(json.loads(SNAPSHOT.read_text())[facade])
    exported = set(importlib.import_module(facade).__all__)
    assert not recorded - exported, f"{facade} no longer exports {sorted(recorded - exported)}"
    assert not exported - recorded, (
        f"{facade} exports {sorted(exported - recorded)} not in {SNAPSHOT.name}: record them "
        "(python -m tests.unit.project.test_public_api)"
    )


@pytest.mark.parametrize("facade", FACADES)
def test_every_exported_name_resolves(facade: str) -> None:
    module = importlib.import_module(facade)
    assert module.__doc__ and "Usage::" in module.__doc__, f"{facade}: no usage docstring"
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{facade}.{name}"
    lazy = getattr(module, "_LAZY", None)
    if lazy is not None:  # a lazy facade lists nothing it does not export
        assert set(lazy) <= set(module.__all__), set(lazy) - set(module.__all__)


def test_the_readme_import_works() -> None:
    from pipeline.signing import Trust

    assert Trust().is_empty()


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current(), indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {SNAPSHOT}\n")
