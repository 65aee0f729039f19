"""Command modules of the CLI, one per capability.

Each module only defines its commands (and self-contained groups such as ``keys``);
:mod:`pipeline.cli` assembles the tree, so importing a module here registers nothing.
"""

from pipeline._cli._common import report_error

__all__ = ["report_error"]
