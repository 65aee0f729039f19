"""The one exception tree of the project, and the exit codes the CLI maps it to.

Every error a user can cause (bad input, a tampered file, a wrong key, an
unreachable service) is a subclass of :class:`PipelineError`. The CLI catches
``PipelineError`` and prints ``error: <message>`` with the class's exit code; it
never prints a traceback for these. Anything else escaping is a bug and exits
with :data:`EXIT_INTERNAL`.

Exit codes are part of the public interface (documented in docs/exit-codes.md):
scripts and CI jobs branch on them, so they never change meaning.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INPUT = 4
EXIT_INTEGRITY = 5
EXIT_VERIFICATION = 6
EXIT_KEY = 7
EXIT_INSECURE = 8
EXIT_UNREACHABLE = 9
EXIT_NOT_FOUND = 10
EXIT_POLICY = 11
EXIT_AUTH = 12
EXIT_BUILD = 13
EXIT_RENDER = 14
#: ``pipeline policy check`` found violations (docs/exit-codes.md): the code linters use.
EXIT_VIOLATIONS = 1
#: A command's own signature or attestation is not durably discoverable (docs/exit-codes.md).
EXIT_ATTACHMENT = 15
EXIT_CONFLICT = 16


class PipelineError(Exception):
    """Base of every expected failure; ``exit_code`` is what the CLI exits with."""

    exit_code: int = EXIT_INTERNAL


class ConfigError(PipelineError):
    """Configuration is missing or invalid (pipeline.yaml, environment, flags)."""

    exit_code = EXIT_CONFIG


class InputError(PipelineError):
    """An input file or argument is malformed or of the wrong kind."""

    exit_code = EXIT_INPUT


class IntegrityError(PipelineError):
    """Content does not match what was recorded: tampered, truncated, reordered, swapped."""

    exit_code = EXIT_INTEGRITY


class VerificationError(PipelineError):
    """A signature is missing, invalid, or made by a signer that is not trusted."""

    exit_code = EXIT_VERIFICATION


class KeyProviderError(PipelineError):
    """A key cannot be created, found, wrapped or unwrapped (unknown id, wrong key)."""

    exit_code = EXIT_KEY


class InsecureKeyStoreError(KeyProviderError):
    """A key store is readable by others (loose permissions): refuse to use it."""

    exit_code = EXIT_INSECURE


class UnreachableError(PipelineError):
    """A service (registry, Prometheus, KMS, HSM) cannot be reached."""

    exit_code = EXIT_UNREACHABLE


class DeadlineError(UnreachableError):
    """A registry (or a service behind it) did not answer within the operation's deadline.

    Exit 9 like any unreachable service; the message names the budget
    ("registry X did not answer within 5s"), so a webhook denial says why.
    """

    exit_code = EXIT_UNREACHABLE


class KeyProviderUnreachableError(KeyProviderError, UnreachableError):
    """A key provider's backend (HSM token, KMS) cannot be reached: both kinds of error."""

    exit_code = EXIT_UNREACHABLE


class NotFoundError(PipelineError):
    """A named thing (image, tag, blob, key, file) does not exist."""

    exit_code = EXIT_NOT_FOUND


class PolicyError(PipelineError):
    """A policy or gate refused the artifact or the action."""

    exit_code = EXIT_POLICY


class PolicyViolationsError(PolicyError):
    """``pipeline policy check`` found violations: exit 1, as conftest, kyverno and checkov.

    Why 1 and not 11: CI steps, pre-commit hooks and SARIF upload workflows written for
    those tools treat 1 as "findings"; a bug still prints a traceback and
    ``internal error:``, so the two stay apart for a reader.
    """

    exit_code = EXIT_VIOLATIONS


class AuthError(PipelineError):
    """Authentication or authorisation was refused."""

    exit_code = EXIT_AUTH


class BuildError(PipelineError):
    """An image build or its lint failed."""

    exit_code = EXIT_BUILD


class ChartRenderError(InputError):
    """A Helm chart failed to render: values against values.schema.json, a template error."""

    exit_code = EXIT_RENDER


class ConflictError(PipelineError):
    """The shared state moved or is held: another promotion holds the environment's lock,
    the GitOps working tree has local changes, a push was rejected (non-fast-forward), or
    the requested change would change nothing (a roll-back to what already runs)."""

    exit_code = EXIT_CONFLICT


class AttachmentError(PipelineError):
    """A signature or attestation was pushed but is not durably discoverable.

    Its manifest exists, but neither its discovery tag nor the registry's referrers
    API lists it (the registry rejected the tag, say), so a verifier might not find
    it; the message says what is missing and that ``pipeline attach repair`` retries.
    """

    exit_code = EXIT_ATTACHMENT


class RuntimeSecurityError(PipelineError):
    """The runtime refused to start because a hardening requirement is not met."""

    exit_code = EXIT_INSECURE


__all__ = [name for name in dir() if name.endswith("Error") or name.startswith("EXIT_")]
