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
# 14 and 15 are left to branches that were open when this was added.
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


class KeyProviderUnreachableError(KeyProviderError, UnreachableError):
    """A key provider's backend (HSM token, KMS) cannot be reached: both kinds of error."""

    exit_code = EXIT_UNREACHABLE


class NotFoundError(PipelineError):
    """A named thing (image, tag, blob, key, file) does not exist."""

    exit_code = EXIT_NOT_FOUND


class PolicyError(PipelineError):
    """A policy or gate refused the artifact or the action."""

    exit_code = EXIT_POLICY


class AuthError(PipelineError):
    """Authentication or authorisation was refused."""

    exit_code = EXIT_AUTH


class BuildError(PipelineError):
    """An image build or its lint failed."""

    exit_code = EXIT_BUILD


class ConflictError(PipelineError):
    """The shared state moved or is held: another promotion holds the environment's lock,
    the GitOps working tree has local changes, a push was rejected (non-fast-forward), or
    the requested change would change nothing (a roll-back to what already runs)."""

    exit_code = EXIT_CONFLICT


class RuntimeSecurityError(PipelineError):
    """The runtime refused to start because a hardening requirement is not met."""

    exit_code = EXIT_INSECURE


__all__ = [name for name in dir() if name.endswith("Error") or name.startswith("EXIT_")]
