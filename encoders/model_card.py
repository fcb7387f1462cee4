"""The model card (README.md) ``ember export`` writes: what the encoder is, how to use the exported
folder, and the quality rows of the eval results given (``ember eval beir|sts --json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encoders.config import EncoderConfig
from encoders.errors import EmberError

if TYPE_CHECKING:
    from encoders.export import ExportReport, Format

_BUILTIN_NAMES = {
    "builtin:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "builtin:all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}


class ResultsError(EmberError, ValueError):
    """An eval result file that cannot go on the card."""


def ember_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ember")
    except PackageNotFoundError:
        return "unknown"


def read_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Eval result files (``ember eval beir|sts --json`` / ``-o``); a bad one is a ResultsError
    naming it."""
    out = []
    for p in paths:
        path = Path(p)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ResultsError(f"--results {path}: not a readable JSON file ({exc})") from None
        if not isinstance(data, dict) or not ({"ndcg@10", "spearman"} & set(data)):
            raise ResultsError(
                f"--results {path}: not an `ember eval beir` or `ember eval sts` result "
                "(no ndcg@10 or spearman)"
            )
        out.append({**data, "_file": path.name})
    return out


def check_results(results: Sequence[dict[str, Any]], config: EncoderConfig) -> None:
    fingerprint = config.fingerprint()
    for r in results:
        if r.get("fingerprint") not in (None, fingerprint):
            raise ResultsError(
                f"--results {r.get('_file', '?')}: measured with encoder {r['fingerprint']}, "
                f"not this one ({fingerprint})"
            )


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}" if isinstance(value, int | float) else "-"


def model_card(
    config: EncoderConfig,
    fmt: Format,
    prompt: str,
    results: Sequence[dict[str, Any]],
    source: str,
    report: ExportReport,
) -> str:
    base = _BUILTIN_NAMES.get(config.base_model, Path(config.base_model).name)
    library = "sentence-transformers" if fmt == "sentence-transformers" else "ember"
    lines = [
        "---",
        f"library_name: {library}",
        f"base_model: {base}",
        "pipeline_tag: sentence-similarity",
        "tags: [ember, feature-extraction, sentence-similarity]",
        "---",
        "",
        f"# {config.name}",
        "",
        f"Exported by Ember {ember_version()} (`ember export {source or config.name} OUT --format "
        f"{fmt}`) from encoder fingerprint `{config.fingerprint()}`: base `{base}`"
        + (f" with {len(config.adapters)} LoRA adapter(s) merged" if config.adapters else "")
        + ", weights fp32.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| attention | {config.attention} |",
        f"| pooling | {config.pooling} |",
        f"| max length (documents / queries) | {config.max_length} / {config.query_max_length} |",
        f"| normalised | {'yes' if config.normalize else 'no'} |",
        "| standardisation | "
        + (
            f"corpus-fitted on {config.standardize.samples} texts ({config.standardize.source})"
            if config.standardize
            else "none"
        )
        + " |",
        f"| query prompt | {json.dumps(prompt) if prompt else 'none'} |",
        "",
        "## Use",
        "",
    ]
    if fmt == "sentence-transformers":
        lines += [
            "```python",
            "from sentence_transformers import SentenceTransformer",
            'model = SentenceTransformer("PATH")',
            'queries = model.encode_query(["..."])  # the query prompt is applied',
            'documents = model.encode_document(["..."])',
            "```",
        ]
    else:
        lines += [
            "```bash",
            "ember encode --encoder PATH -i docs.txt -o docs.npy",
            "```",
        ]
    lines += ["", *[f"- {n}" for n in report.notes]] if report.notes else []
    lines += ["", "## Quality", ""]
    retrieval = [r for r in results if "ndcg@10" in r]
    sts = [r for r in results if "spearman" in r and "ndcg@10" not in r]
    if not results:
        lines.append("No eval results were given (`ember export ... --results FILE`).")
    if retrieval:
        lines += [
            "| dataset | split | mode | nDCG@10 | recall@100 | MRR@10 | queries | dtype |",
            "|---|---|---|---:|---:|---:|---:|---|",
        ]
        for r in retrieval:
            lines.append(
                f"| {r.get('dataset', '?')} | {r.get('split', '-')} | {r.get('mode', 'dense')} "
                f"| {_pct(r.get('ndcg@10'))} | {_pct(r.get('recall@100'))} "
                f"| {_pct(r.get('mrr@10'))} | {r.get('queries', '-')} | {r.get('dtype', '-')} |"
            )
        lines.append("")
    if sts:
        lines += ["| STS set | pairs | Spearman | dtype |", "|---|---:|---:|---|"]
        for r in sts:
            lines.append(
                f"| {r.get('dataset', r.get('_file', '?'))} | {r.get('pairs', '-')} "
                f"| {_pct(r.get('spearman'))} | {r.get('dtype', '-')} |"
            )
    return "\n".join(lines).rstrip() + "\n"
