"""The CLI's edge error (its own module, so commands need not import :mod:`ember.cli`, which
imports them)."""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """An error whose message is for the user (bad input, missing file, bad config)."""
