"""``ember encode``: texts in (lines or JSONL), vectors out (.npy or JSONL)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO

import click

from ember.commands.options import encoder_spec_option, format_option, instruction_options
from ember.errors import UserError
from encoders.jsonl import parse_jsonl


def read_texts(stream: IO[str], fmt: str, field: str) -> tuple[list[str], list[object]]:
    """Return texts and ids (line numbers unless JSONL records carry ``id``).

    Every bad record is a UserError naming its line; nothing is encoded until all input is read.
    """
    texts: list[str] = []
    ids: list[object] = []
    if fmt == "text":
        for lineno, raw in enumerate(stream, start=1):
            line = raw.rstrip("\n")
            if line.strip():
                texts.append(line)
                ids.append(lineno)
    else:
        for lineno, record in parse_jsonl(stream, "line {}".format, UserError):
            text = record.get(field)
            if not isinstance(text, str) or not text.strip():
                raise UserError(
                    f"line {lineno}: field {field!r} is missing or not a non-empty string"
                )
            texts.append(text)
            ids.append(record.get("id", lineno))
    if not texts:
        raise UserError("no input texts")
    return texts, ids


@click.command("encode")
@click.option(
    "-i", "--input", "input_path", default="-", show_default=True, help="Input file, '-' for stdin."
)
@click.option(
    "-o",
    "--output",
    "output_path",
    default="-",
    show_default=True,
    help="Output: a .npy path (float32 matrix) or a JSONL path / '-' for stdout.",
)
@format_option(["text", "jsonl"], "text", help="Input format: one text per line, or JSONL records.")
@click.option("--field", default="text", show_default=True, help="JSONL field holding the text.")
@encoder_spec_option(
    "smollm2-ember",
    "Encoder preset, encoder folder, LLM2Vec checkpoint folder or local HF model folder.",
)
@instruction_options(
    instruction="Encode as queries with this instruction (documents: leave unset)."
)
@click.option(
    "--query",
    "as_queries",
    is_flag=True,
    help="Encode as queries (the query length limit, the folder's query prompt) even without "
    "--instruction.",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show a progress bar on stderr.",
)
def encode_command(
    input_path: str,
    output_path: str,
    fmt: str,
    field: str,
    encoder_spec: str,
    instruction: str | None,
    as_queries: bool,
    progress: bool,
) -> None:
    """Encode texts into L2-normalised float32 vectors.

    \b
    Examples:
      echo "a query" | ember encode --instruction "Retrieve relevant passages"
      ember encode -i docs.jsonl --format jsonl -o vectors.npy
      ember encode --encoder ./e5-folder --query -i queries.txt -o q.npy
    """
    import numpy as np

    from ember.commands.index import load_encoder_or_fail

    if input_path == "-":
        texts, ids = read_texts(sys.stdin, fmt, field)
    else:
        path = Path(input_path)
        if not path.is_file():
            raise UserError(f"--input: no such file: {input_path}")
        with path.open(encoding="utf-8") as stream:
            texts, ids = read_texts(stream, fmt, field)

    encoder = load_encoder_or_fail(encoder_spec)
    if instruction or as_queries:
        vectors = encoder.encode_queries(texts, instruction, show_progress=progress)
    else:
        vectors = encoder.encode_documents(texts, show_progress=progress)

    if output_path.endswith(".npy"):
        out = Path(output_path)
        tmp = out.with_name(out.name + ".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(out)  # no half-written output on failure
        click.echo(f"wrote {vectors.shape[0]}x{vectors.shape[1]} float32 to {out}", err=True)
        return
    lines = (
        json.dumps({"id": i, "embedding": [round(float(x), 7) for x in v]})
        for i, v in zip(ids, vectors, strict=True)
    )
    if output_path == "-":
        for line in lines:
            click.echo(line)
    else:
        out = Path(output_path)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(out)


COMMANDS = [encode_command]
