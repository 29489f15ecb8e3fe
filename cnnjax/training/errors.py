"""The errors a user can cause, and the did-you-mean helper the validators share.

Each type is one kind of mistake or fault with its own exit status (``launch.EXIT_CODES``,
printed in the README). The message is one line that says what is wrong and what to do;
it is all a user sees unless ``launch.py --debug`` is given. This module imports nothing
from cnnjax, so that registries and validators can all import it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config, experiment name or override that cannot be used; the message says why."""


class ModelInputError(ConfigError):
    """The model cannot take the data's inputs, or gives outputs the task cannot use
    (the message names both shapes)."""


class DatasetUnavailableError(RuntimeError):
    """The dataset is not prepared where we looked and may not be downloaded."""


class WorkdirError(OSError):
    """The work directory cannot be created or written (under a file, read-only, full)."""


class WorkdirLockedError(RuntimeError):
    """Another live process is running in the work directory."""


class IncompatibleResumeError(RuntimeError):
    """The work directory holds a run whose train state or data order the config changes."""


class NoVerifiedCheckpointError(RuntimeError):
    """Checkpoints exist but none verifies (each was set aside); ``--restart`` starts afresh."""


class DivergedError(RuntimeError):
    """A train step gave a non-finite loss, gradient norm or parameters
    (``on_nonfinite="stop"``); nothing after the last good checkpoint was saved."""


class GradcheckFailedError(RuntimeError):
    """The finite-difference gradient check of a model failed."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest candidates, or ``""`` if none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
