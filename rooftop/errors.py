"""Errors that reach the user as one line and a documented exit code.

Exit codes (also in the README):

    0  success (``--check``: nothing would change)
    1  ``--check`` only: some pass would change the model
    2  usage error, or unreadable / invalid input or output path
    3  verification failed: the optimized model computes something else; nothing written
    4  internal error (a bug in Rooftop)
    5  ``--audit`` gate failed: a ``--fail-on`` kind was found, a budget was exceeded, or the model
       regressed against ``--baseline``
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_CHANGES = 1
EXIT_INPUT = 2
EXIT_VERIFY = 3
EXIT_INTERNAL = 4
EXIT_AUDIT_FAILED = 5


class RooftopError(Exception):
    """Base class: a message meant for the user and the exit code it maps to."""

    exit_code = EXIT_INTERNAL


class UsageError(RooftopError):
    """Bad command-line arguments or option values."""

    exit_code = EXIT_INPUT


class InputError(RooftopError):
    """The input model (or an input data file) cannot be read or is invalid."""

    exit_code = EXIT_INPUT


class OutputError(RooftopError):
    """The output cannot be written (missing folder, no permission, same as input)."""

    exit_code = EXIT_INPUT


class VerificationError(RooftopError):
    """The optimized model's outputs differ from the original's beyond tolerance."""

    exit_code = EXIT_VERIFY

    def __init__(self, message: str, pass_name: str | None = None) -> None:
        super().__init__(message)
        self.pass_name = pass_name


class InternalError(RooftopError):
    """Something in Rooftop itself went wrong."""

    exit_code = EXIT_INTERNAL


def first_line(e: BaseException | None, default: str | None = None) -> str:
    """The first non-empty line of an exception's message (at most 300 characters); the
    exception's type name (or ``default``) when the message is empty."""
    if e is None:
        return "unknown error"
    for line in str(e).strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(e).__name__ if default is None else default
