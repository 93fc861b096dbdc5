"""Errors a user can act on.

Anything raised as :class:`UserError` reaches the terminal as one line and exit status 2;
anything else is a bug and is logged with its traceback in the run folder.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user or their environment: config, endpoint, seeds, model output."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages would break the one-line promise.
        super().__init__(" ".join(str(message).split()))


class ConfigError(UserError):
    """The configuration is invalid."""


class EndpointUnavailable(UserError):
    """The endpoint cannot be reached or does not serve the requested model."""


class GarbageOutput(UserError):
    """The model's replies cannot be used at all (the run stops rather than loop forever)."""
