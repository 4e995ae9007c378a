"""Errors that reach the user as one clear line (the CLI prints them and exits with code 2)."""

from __future__ import annotations


class CardioInrError(Exception):
    """Base class: a problem the user can fix (bad input, bad option, unusable file).

    The message is kept to one line whatever it quotes (a file name, a DICOM value holding a
    newline): runs of whitespace and control characters become one space."""

    exit_code = 2

    def __init__(self, message: object = "", *args: object) -> None:
        if isinstance(message, str):
            message = " ".join("".join(c if c.isprintable() else " " for c in message).split())
        super().__init__(message, *args)


class InputError(CardioInrError):
    """An input file or array is missing, unreadable or inconsistent."""


class ConfigError(CardioInrError):
    """An option or configuration value is invalid."""


class FitDivergedError(CardioInrError):
    """The optimisation produced non-finite values and could not be recovered."""

    exit_code = 3


class CheckpointError(CardioInrError):
    """A prior checkpoint is missing, corrupt, of the wrong kind or of an unsupported version."""
