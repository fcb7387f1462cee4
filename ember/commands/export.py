"""``ember export``: an Ember encoder as a sentence-transformers folder or a merged HF folder."""

from __future__ import annotations

from pathlib import Path

import click

from ember.commands.options import format_option, instruction_options
from ember.errors import UserError


@click.command("export")
@click.argument("encoder_spec", metavar="ENCODER")
@click.argument("out", type=click.Path(path_type=Path))
@format_option(
    ["sentence-transformers", "hf"],
    "sentence-transformers",
    help="sentence-transformers: a folder SentenceTransformer(OUT) loads; hf: merged weights "
    "+ encoder_config.json that Ember loads back (every kind but LLaRA).",
)
@instruction_options(
    task=("web_search", "Task whose instruction becomes the query prompt (decoder encoders)."),
    instruction="Query instruction text (overrides --task).",
    no_instruction="No query prompt. Default: the task's instruction for decoder encoders, none "
    "for encoder-only models (e.g. MiniLM), as ember eval does.",
)
@click.option(
    "--results",
    "results",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="An `ember eval beir|sts --json` result for the model card (repeatable).",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def export_command(
    encoder_spec: str,
    out: Path,
    fmt: str,
    task: str,
    instruction: str | None,
    no_instruction: bool,
    results: tuple[Path, ...],
    force: bool,
) -> None:
    """Write ENCODER (a preset, encoder folder or checkpoint) to the folder OUT.

    The sentence-transformers folder reproduces Ember's vectors (adapters merged, fp32; the
    corpus-fitted standardisation as a Dense layer; the instruction as the "query" prompt).
    What it cannot compute the same way (bidirectional decoders, LLaRA, MoEE, echo, trainable
    poolers) is refused with the reason: use --format hf for those.

    \b
    Examples:
      ember export minilm out/minilm-st
      ember export smollm2 out/smollm2-st --no-instruction
      ember eval beir ../shared/data/beir/scifact -o scifact.json
      ember export smollm2-ember out/smollm2-ember-hf --format hf --results scifact.json
    """
    from transformers import AutoConfig

    from encoders import resolve_config
    from encoders.export import ExportError, ResultsError, export_encoder, read_results
    from encoders.instructions import UnknownTaskError, instruction_for
    from encoders.loading import ModelNotFoundError, is_decoder, resolve_model_path

    if instruction and no_instruction:
        raise UserError("--instruction and --no-instruction exclude each other")
    try:
        config = resolve_config(encoder_spec)
        decoder = is_decoder(AutoConfig.from_pretrained(resolve_model_path(config.base_model)))
    except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
        raise UserError(f"--encoder: {exc}") from None
    query_instruction: str | None = None
    if instruction:
        query_instruction = instruction
    elif not no_instruction and decoder:
        try:
            query_instruction = instruction_for(task)
        except UnknownTaskError as exc:
            raise UserError(f"--task: {exc}") from None
    try:
        report = export_encoder(
            config,
            out,
            fmt,  # type: ignore[arg-type]  # click.Choice holds the Format literals
            instruction=query_instruction,
            results=read_results(results),
            source=encoder_spec,
            force=force,
        )
    except (ExportError, ResultsError) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"wrote {report.format} folder {report.out}", err=True)
    if report.query_prompt:
        click.echo(f"query prompt: {report.query_prompt!r}", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)


COMMANDS = [export_command]
