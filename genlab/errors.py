"""The error types genlab raises for bad input.

Every user-facing failure is one of these, carrying a message that fits on one line and says what
to do. The CLI prints ``str(err)`` and exits non-zero; the dashboard shows it with ``st.error``.
"""

from __future__ import annotations


class GenlabError(Exception):
    """Base class: an expected failure with a clear, one-line message."""


class ConfigError(GenlabError, ValueError):
    """An invalid setting (unknown model, epochs <= 0, an unknown --set key, ...)."""


class DataError(GenlabError, ValueError):
    """A dataset that cannot be loaded: unknown name, corrupt or wrongly shaped file."""


class StoreError(GenlabError):
    """The run store cannot be opened or written (locked, corrupt, unknown run)."""


class RunNotFound(StoreError, LookupError):
    """No run has the given id."""

    def __str__(self) -> str:  # LookupError would wrap the message in quotes
        return str(self.args[0]) if self.args else "run not found"


class OwnershipError(GenlabError, PermissionError):
    """Someone who is neither a run's owner nor the teacher tried to delete or cancel it."""


class TrainingCancelled(GenlabError):
    """Raised inside the training loop when the user cancels the run."""
