"""``ember`` command line. Each module in :mod:`ember.commands` contributes commands through a
module-level ``COMMANDS`` list, so packages add commands without editing this file.

Errors reach the user as one line on stderr and a non-zero exit code; set ``EMBER_DEBUG=1`` for
the traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys

import click

import ember.commands
from ember.errors import UserError

__all__ = ["UserError", "cli", "main"]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            if os.environ.get("EMBER_DEBUG"):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"error: {message}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def cli(verbose: bool) -> None:
    """Ember: search with embeddings from decoder-only LLMs.

    Runs fully offline on the embedded defaults (local Qdrant, in-process jobs, the bundled
    SmolLM2-135M encoder). Configure with EMBER_* environment variables (see README).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import transformers

        transformers.logging.set_verbosity_error()


def _register() -> None:
    for info in sorted(pkgutil.iter_modules(ember.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"ember.commands.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="ember")
