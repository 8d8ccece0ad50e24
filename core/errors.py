"""The project's own errors: the ones a user can cause and read.

The CLI prints a `LabError` as one line (exit status `exit_code`) and the dashboard shows it as
a message; anything else is a bug or a fault of the machine (a CUDA out-of-memory, a coding
error) and keeps its traceback, so it can be reported and fixed.
"""
from __future__ import annotations


class LabError(Exception):
    """An error whose message tells the user what went wrong and what to do."""
    exit_code = 1


class BadInput(LabError):
    """The user gave something unusable: an option, a file, an image, a name."""
    exit_code = 2


class Cancelled(Exception):
    """A job was asked to stop (SIGTERM, Ctrl-C or the dashboard's Cancel): not an error, the
    trainer saves what it has and marks the run cancelled."""
