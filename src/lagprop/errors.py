"""Errors a user can act on.

Every mistake in a user's input is raised as a :class:`LagpropError` (or a subclass) whose
message names the problem and the fix.  The command line prints that message on one line
and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LagpropError(Exception):
    """A problem with what the user asked for; the message says what to change."""

    exit_code = 2


class GraphError(LagpropError):
    """The graph is malformed (unknown neuron, arc into an input, unreachable output...)."""


class CycleError(GraphError):
    """An operation that needs a directed acyclic graph was given a cyclic one."""


class DataError(LagpropError):
    """A data set cannot be read or is not numeric, finite and consistently shaped."""


class ConfigError(LagpropError):
    """A hyperparameter or option is out of range."""


class DivergenceError(LagpropError):
    """Training diverged (NaN, inf, or an exploding constraint violation)."""

    exit_code = 3
