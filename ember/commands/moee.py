"""``ember moee``: build the UNTRAINED demo MoE (upcycled SmolLM2) and fit MoEE statistics."""

from __future__ import annotations

import random
from pathlib import Path

import click

from ember.commands.encode import read_texts
from ember.errors import UserError


@click.group("moee")
def moee_group() -> None:
    """MoEE: routing-weight + hidden-state embeddings from Mixture-of-Experts models."""


@moee_group.command("upcycle")
@click.option(
    "--source",
    default="smollm2",
    show_default=True,
    help="Dense llama/mistral HF folder, or 'smollm2' for the bundled SmolLM2-135M.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--experts", default=4, show_default=True, type=click.IntRange(2, 64))
@click.option("--top-k", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--seed", default=0, show_default=True, help="Seed of the random router.")
def upcycle(source: str, out: Path, experts: int, top_k: int, seed: int) -> None:
    """Copy each MLP into EXPERTS identical experts behind a random router (UNTRAINED demo)."""
    from encoders.loading import smollm2_folder
    from encoders.upcycle import UNTRAINED_NOTE, UpcycleError, upcycle_folder

    src = smollm2_folder() if source == "smollm2" else Path(source)
    try:
        folder = upcycle_folder(src, out, num_experts=experts, top_k=top_k, seed=seed)
    except UpcycleError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"wrote {folder}\n{UNTRAINED_NOTE}")


@moee_group.command("fit-stats")
@click.option(
    "--base", required=True, help="MoE model folder, or an encoder folder of kind 'moee'."
)
@click.option(
    "--sample",
    "sample_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Corpus sample: text lines, or JSONL with --field.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text")
@click.option("--field", default="text", show_default=True)
@click.option("--limit", default=512, show_default=True, help="Texts drawn from the sample.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--name", default=None, help="Encoder name [default: the out folder's name].")
@click.option("--attention", type=click.Choice(["causal", "bidirectional"]), default="causal")
@click.option("--pooling", default="mean", show_default=True, help="Pooling of hs.")
@click.option("--similarity", type=click.Choice(["sum", "concat"]), default="sum")
@click.option("--rw-weight", default=1.0, show_default=True, type=click.FloatRange(0))
@click.option("--max-length", default=512, show_default=True)
@click.option("--progress/--no-progress", default=True)
def fit_stats(
    base: str,
    sample_path: Path,
    fmt: str,
    field: str,
    limit: int,
    out: Path,
    name: str | None,
    attention: str,
    pooling: str,
    similarity: str,
    rw_weight: float,
    max_length: int,
    progress: bool,
) -> None:
    """Fit the MoEE standardisation once on a corpus sample; write an encoder folder."""
    from encoders import Encoder, EncoderConfig
    from encoders.config import CONFIG_FILE, MoeeConfig
    from encoders.moee import MoeeEncoder

    with sample_path.open() as stream:
        texts, _ = read_texts(stream, fmt, field)
    if len(texts) < 2:
        raise UserError(f"{sample_path}: need at least 2 texts")
    if len(texts) > limit:
        texts = random.Random(0).sample(texts, limit)
    if (Path(base) / CONFIG_FILE).is_file():
        config = EncoderConfig.load(base)
    else:
        config = EncoderConfig(
            name=name or out.name,
            base_model=str(Path(base).resolve()),
            kind="moee",
            attention=attention,  # type: ignore[arg-type]
            pooling=pooling,  # type: ignore[arg-type]
            max_length=max_length,
            moee=MoeeConfig(similarity=similarity, rw_weight=rw_weight),  # type: ignore[arg-type]
        )
    if config.kind != "moee":
        raise UserError(f"{base}: encoder kind is {config.kind!r}, not 'moee'")
    encoder = Encoder.from_config(config)
    assert isinstance(encoder, MoeeEncoder)
    stats = encoder.fit_stats(texts, show_progress=progress)
    encoder.save(out)
    click.echo(
        f"fitted on {stats.samples} texts: hs {len(stats.hs_mean)} + rw {len(stats.rw_mean)} "
        f"dims; wrote {out / CONFIG_FILE} (fingerprint {encoder.fingerprint})"
    )


COMMANDS = [moee_group]
