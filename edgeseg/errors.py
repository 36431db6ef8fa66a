"""Errors a user can cause.

Each carries one sentence that says what is wrong and what to do; the CLI prints it on
one line and exits non-zero without a traceback. Anything that is not an EdgesegError
is a bug in edgeseg and keeps its traceback.
"""
from __future__ import annotations


class EdgesegError(Exception):
    """Base class of every error caused by the user's input or environment."""

    exit_code = 2


class InputFileError(EdgesegError):
    """A file the user gave is missing, empty, truncated or of the wrong format."""


class UntrustedFileError(EdgesegError):
    """A file would execute code when loaded and the user has not said it is trusted."""


class DataError(EdgesegError):
    """A dataset folder is malformed or does not fit the model."""


class ConfigError(EdgesegError):
    """Options contradict each other or are out of range."""


class MissingDependencyError(EdgesegError):
    """An optional dependency is needed for what the user asked."""


class AccuracyError(EdgesegError):
    """A result failed an accuracy check the user (or edgeseg) asked for."""

    exit_code = 3


# Whom a sentence speaks to: on the command line an error names options (--arch NAME), in Python the arguments
# (facts=ModelFacts(arch=...)). The CLI turns this on for the length of one command.
_speaking_to_cli = False


def speak_to_cli(on: bool) -> None:
    global _speaking_to_cli
    _speaking_to_cli = bool(on)


def option(cli: str, python: str) -> str:
    """How an error names what the user should set: ``cli`` under the ``edgeseg`` command, else ``python``.

    >>> option("--arch NAME", "facts=ModelFacts(arch=NAME)")
    'facts=ModelFacts(arch=NAME)'
    """
    return cli if _speaking_to_cli else python
