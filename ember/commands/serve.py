"""``ember serve``: the search API (uvicorn) on the configured store and encoder.

By default everything is embedded: the local Qdrant store under ``EMBER_DATA_DIR`` and the
bundled encoder. The store is opened before the server starts, so a store locked by another
process is a one-line error; the encoder loads in the background (``GET /health`` says when it
is ready).

Without an API key everything is open (search, embeddings and the job routes), so the server
binds beyond loopback only with a key (``EMBER_API_KEYS``) or when told ``--insecure``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import click

from ember.commands.index import dtype_option, open_store_or_fail, settings_for, store_options
from ember.errors import UserError


@click.command("serve")
@click.option("--host", default=None, help="Bind address [env EMBER_API_HOST; default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env EMBER_API_PORT; default 8000].")
@click.option(
    "--encoder",
    "encoder_spec",
    default=None,
    help="Encoder preset (smollm2, smollm2-bi, minilm), encoder folder or HF model folder "
    "[env EMBER_ENCODER; default smollm2].",
)
@click.option(
    "--micro-batching/--no-micro-batching",
    default=None,
    help="Encode concurrent queries together [env EMBER_API_MICRO_BATCHING; default on].",
)
@click.option(
    "--torch-threads",
    type=click.IntRange(min=1),
    envvar="EMBER_TORCH_THREADS",
    default=None,
    help="Intra-op threads for the encoder [env EMBER_TORCH_THREADS; default torch's]. On a "
    "host whose cores are shared with other busy processes, 1 avoids stalls in batched forwards.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@dtype_option
@click.option(
    "--insecure",
    is_flag=True,
    help="Bind beyond loopback without an API key (anyone who reaches the port can search and "
    "run jobs).",
)
@store_options
def serve_command(
    host: str | None,
    port: int | None,
    encoder_spec: str | None,
    micro_batching: bool | None,
    torch_threads: int | None,
    log_level: str,
    insecure: bool,
    data_dir: str | None,
    backend: str | None,
) -> None:
    """Serve the search API, the OpenAI-compatible embeddings and the web page.

    \b
    Examples:
      ember serve                          # http://127.0.0.1:8000/
      ember serve --port 9000 --encoder minilm
      EMBER_API_KEYS='["secret"]' ember serve --host 0.0.0.0
      ember serve --host 0.0.0.0 --insecure  # no key: open to anyone who reaches it
    """
    import uvicorn

    from encoders import resolve_config
    from encoders.loading import ModelNotFoundError
    from search_api.app import create_app
    from search_api.settings import ApiSettings

    settings = settings_for(data_dir, backend, ApiSettings)
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["api_host"] = host
    if port is not None:
        overrides["api_port"] = port
    if encoder_spec is not None:
        overrides["encoder"] = encoder_spec
    if micro_batching is not None:
        overrides["api_micro_batching"] = micro_batching
    if overrides:
        settings = ApiSettings(**{**settings.model_dump(), **overrides})
    if not settings.api_keys and not is_loopback(settings.api_host) and not insecure:
        raise UserError(
            f"--host {settings.api_host}: refusing to serve beyond loopback without an API key "
            "(set EMBER_API_KEYS, bind to 127.0.0.1, or pass --insecure)"
        )
    try:
        resolve_config(settings.encoder)  # a typo fails now, not after the server is up
    except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
        raise UserError(f"--encoder: {exc}") from None

    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    store = open_store_or_fail(settings)
    try:
        app = create_app(settings, store=store)
        click.echo(
            f"ember: serving on http://{settings.api_host}:{settings.api_port}/ "
            f"(encoder {settings.encoder} loading; GET /health turns 200 when ready)",
            err=True,
        )
        uvicorn.run(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_level=log_level,
            workers=1,  # one encoder per process; the embedded store is one process anyway
        )
    finally:
        store.close()


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); ``0.0.0.0`` and names are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


COMMANDS = [serve_command]
