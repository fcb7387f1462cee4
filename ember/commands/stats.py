"""``ember fit-stats``: corpus-fitted standardisation for any encoder (not MoEE, which has
``ember moee fit-stats``)."""

from __future__ import annotations

import random
from pathlib import Path

import click

from ember.commands.options import int_option
from ember.errors import UserError


@click.command("fit-stats")
@click.argument("encoder")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the standardised encoder (encoder_config.json [+ whitening.npy]).",
)
@int_option(
    "--limit",
    default=1000,
    min=2,
    help="Documents drawn (seeded) from the corpus to fit on.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the document sample.")
@click.option(
    "--whiten/--no-whiten",
    default=False,
    show_default=True,
    help="Also decorrelate the dimensions (PCA whitening, all dimensions kept).",
)
@click.option("--name", default=None, help="Name of the new encoder [default: ENCODER-std].")
@click.option("--progress/--no-progress", default=True, show_default=True)
def fit_stats(
    encoder: str,
    corpus: Path,
    out: Path,
    limit: int,
    seed: int,
    whiten: bool,
    name: str | None,
    progress: bool,
) -> None:
    """Fit per-dimension mean and std of ENCODER's document vectors on a sample of CORPUS
    (a BEIR folder, JSONL, CSV or a folder of text files) and write a standardised encoder to
    --out. Queries and documents then get the same transform; the statistics are part of the
    encoder's fingerprint, so collections built with it are separate builds."""
    from encoders import Encoder
    from encoders.config import CONFIG_FILE
    from encoders.registry import resolve_config
    from encoders.standardize import fit_encoder
    from indexer.readers import read_corpus

    try:
        config = resolve_config(encoder)
    except Exception as exc:  # unknown preset / folder: one line naming the argument
        raise UserError(f"ENCODER: {exc}") from None
    if config.kind == "moee":
        raise UserError("ENCODER: moee encoders are standardised by `ember moee fit-stats`")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    texts = [f"{d.title} {d.text}".strip() for d in read_corpus(corpus)]
    if len(texts) < 2:
        raise UserError(f"CORPUS {corpus}: need at least 2 documents")
    if len(texts) > limit:
        texts = random.Random(seed).sample(texts, limit)
    base = config.model_copy(update={"standardize": None})
    if name or not config.standardize:
        base = base.model_copy(update={"name": name or f"{config.name}-std"})
    model = Encoder.from_config(base)
    source = f"{len(texts)} documents of {corpus} (seed {seed}){', whitened' if whiten else ''}"
    saved = fit_encoder(model, texts, out, whiten=whiten, source=source, show_progress=progress)
    dims = len(saved.standardize.mean) if saved.standardize else 0
    click.echo(
        f"fitted on {len(texts)} documents ({dims} dims); wrote {out / CONFIG_FILE} "
        f"(fingerprint {saved.fingerprint()})",
        err=True,
    )
    click.echo(str(out))


COMMANDS = [fit_stats]
