"""The root of Ember's own errors.

Domain errors are raised deep (a store, a reader, a trainer) and translated once at each edge:
the CLI prints their message as one line and exits 1 (``ember.cli``), the API answers with
their ``status`` and message (``search_api.errors``). Each subclass also keeps the builtin base
it always had (``ValueError``, ``KeyError``, ``RuntimeError``...), so code that catches those
keeps working.

``status`` is the HTTP status the error means when a request caused it (None: the server's own
fault, a 500, logged with its traceback).
"""

from __future__ import annotations


class EmberError(Exception):
    """An error whose message is meant for the user."""

    status: int | None = None

    def __str__(self) -> str:
        # KeyError subclasses would otherwise print their message quoted
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()
