"""One module per command family; each exposes ``COMMANDS: list[click.Command]``."""
