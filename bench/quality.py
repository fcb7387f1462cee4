"""Quality table: SciFact (nDCG@10, recall@100, MRR@10), STS-B Spearman and the Echo prefix test
for BM25, MiniLM, the SmolLM2 baselines and every extra encoder listed in
``bench/quality_rows.json`` (or given with ``--row LABEL=SPEC``).

Writes ``bench/out/quality.json`` (merged with earlier runs, row by row) and the quality section
of ``bench/RESULTS.md`` (between the ``quality:begin`` / ``quality:end`` markers; the rest of the
file is left alone).

    python bench/quality.py                        # full SciFact + scifact-mini, every row
    python bench/quality.py --mini                 # scifact-mini only (what CI can afford)
    python bench/quality.py --mini-only-for SmolLM2  # full SciFact for the others only
    python bench/quality.py --row "SmolLM2 MNTP=.ember/encoders/mntp"

Document vectors are cached per encoder fingerprint (``.ember/eval-cache``), so re-runs only
encode what changed; the three causal SmolLM2 poolings share one forward pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BEGIN = "<!-- quality:begin (written by bench/quality.py; edits inside are overwritten) -->"
END = "<!-- quality:end -->"
ROWS_FILE = ROOT / "bench" / "quality_rows.json"
SCIFACT_SETS = {"scifact": "beir/scifact", "scifact-mini": "beir/scifact-mini"}
# The original (cased, untokenised) STS-B release; the folder above it holds SentEval's
# lowercased, tokenised copy (all-MiniLM-L6-v2 scores the same 82.0 on both).
STS_PATH = "sts/STSBenchmark/stsbenchmark"
ECHO_PATH = "echo_toy_triples_paper_subset.json"
CAUSAL_POOLINGS = ("last_token", "mean", "weighted_mean")


@dataclass
class Row:
    label: str
    kind: str  # "bm25" | "encoder"
    spec: str | None = None  # preset name or encoder folder (public encode path)
    config: Any = None  # an EncoderConfig built here (builtin baselines)
    group: str | None = None  # builtin rows sharing one forward pass (differ only in pooling)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def builtin_rows() -> list[Row]:
    from encoders.loading import MINILM, SMOLLM2
    from encoders.registry import PRESETS

    causal = [
        Row(
            label=f"SmolLM2-135M causal {p}",
            kind="encoder",
            config=PRESETS["smollm2"].model_copy(
                update={"name": f"smollm2-causal-{p}", "pooling": p}
            ),
            group="smollm2-causal",
            note="untrained",
        )
        for p in CAUSAL_POOLINGS
    ]
    assert PRESETS["smollm2"].base_model == SMOLLM2 and PRESETS["minilm"].base_model == MINILM
    return [
        Row(label="BM25", kind="bm25"),
        Row(label="all-MiniLM-L6-v2", kind="encoder", spec="minilm", note="trained encoder"),
        *causal,
        Row(
            label="SmolLM2-135M bidirectional mean",
            kind="encoder",
            spec="smollm2-bi",
            note="untrained; attention switched only",
        ),
    ]


def extra_rows(cli_rows: Sequence[str], rows_file: Path = ROWS_FILE) -> tuple[list[Row], list[str]]:
    """Rows from ``bench/quality_rows.json`` ({"rows": [{"label", "encoder", "note"?}]}) and
    ``--row LABEL=SPEC``. Relative folders resolve against the repo root.

    Returns (rows, skipped labels)."""
    from encoders import PRESETS

    entries: list[dict[str, str]] = []
    if rows_file.is_file():
        data = json.loads(rows_file.read_text())
        entries.extend(data.get("rows", []))
    for item in cli_rows:
        label, sep, spec = item.partition("=")
        if not sep or not label.strip() or not spec.strip():
            raise SystemExit(f"--row expects LABEL=SPEC, got {item!r}")
        entries.append({"label": label.strip(), "encoder": spec.strip()})
    rows, skipped = [], []
    for entry in entries:
        spec = entry["encoder"]
        if spec not in PRESETS:
            path = Path(spec).expanduser()
            path = path if path.is_absolute() else ROOT / path
            if not (path / "encoder_config.json").is_file():  # absent, or still training
                skipped.append(f"{entry['label']} ({spec}: not built yet)")
                continue
            spec = str(path)
        rows.append(
            Row(label=entry["label"], kind="encoder", spec=spec, note=entry.get("note", ""))
        )
    return rows, skipped


# ---- evaluation ------------------------------------------------------------------------------
class Runner:
    def __init__(self, args: argparse.Namespace):
        from indexer.evaluation import load_beir, load_echo_triples, load_sts
        from indexer.evaluation.cache import VectorCache

        self.args = args
        data = Path(args.data_dir)
        self.sets = ["scifact-mini"] if args.mini else ["scifact", "scifact-mini"]
        if args.sets:
            self.sets = [s for s in self.sets if s in args.sets]
        self.datasets = {name: load_beir(data / SCIFACT_SETS[name]) for name in self.sets}
        self.sts = None if args.no_sts else load_sts(data / STS_PATH)
        self.triples = None if args.no_echo else load_echo_triples(data / ECHO_PATH)
        self.cache = VectorCache(args.cache_dir)

    def sets_for(self, row: Row) -> list[str]:
        if label_matches(row.label, self.args.mini_only_for):
            return [s for s in self.sets if s == "scifact-mini"]
        return self.sets

    def bm25(self, row: Row) -> dict[str, Any]:
        from indexer.evaluation.beir import evaluate_bm25

        out: dict[str, Any] = {}
        for name in self.sets_for(row):
            out[name] = evaluate_bm25(self.datasets[name]).as_dict()
        return out

    def encoder_rows(self, rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
        """Evaluate ``rows`` that share one encoder (a group: same config except pooling)."""
        from encoders import Encoder
        from encoders.registry import resolve_config
        from indexer.evaluation import default_instruction
        from indexer.evaluation.beir import score_dense
        from indexer.evaluation.cache import encode_cached, encode_variants_cached
        from indexer.evaluation.echo import SIMPLE_POOLINGS, echo_prefix_test
        from indexer.evaluation.sts import score_sts, unique_sentences

        first = rows[0]
        config = first.config if first.config else resolve_config(str(first.spec))
        if self.args.dtype:
            config = config.model_copy(update={"dtype": self.args.dtype})
        encoder = Encoder.from_config(config)
        dtype = encoder.dtype  # what it ran in (auto resolved, EMBER_DTYPE)
        poolings = [r.config.pooling for r in rows] if first.group else None
        progress = self.args.progress

        def vectors(texts: list[str], instruction: str | None, max_length: int | None, desc: str):
            if poolings:
                return encode_variants_cached(
                    encoder, texts, poolings, instruction=instruction, max_length=max_length,
                    cache=self.cache, show_progress=progress, desc=desc,
                )  # fmt: skip
            v = encode_cached(
                encoder, texts, instruction=instruction, max_length=max_length,
                cache=self.cache, show_progress=progress, desc=desc,
            )  # fmt: skip
            return {encoder.config.pooling: v}

        modes = poolings or [encoder.config.pooling]
        results: dict[str, dict[str, Any]] = {r.label: {} for r in rows}
        by_mode = dict(zip(modes, rows, strict=True))
        info = {
            "fingerprints": {
                m: encoder.config.model_copy(update={"pooling": m}).fingerprint() for m in modes
            }
        }
        for mode, row in by_mode.items():
            results[row.label]["encoder"] = {
                "name": encoder.config.name if not poolings else row.config.name,
                "spec": row.spec or "builtin",
                "attention": encoder.config.attention,
                "pooling": mode,
                "fingerprint": info["fingerprints"][mode],
                "dtype": dtype,
            }
        names = {s for r in rows for s in self.sets_for(r)}
        for name in [s for s in self.sets if s in names]:
            ds = self.datasets[name]
            instruction = default_instruction(encoder, "scifact")
            if self.args.served_only:  # the exact rows stay as an earlier run left them
                self.served_rows(encoder, rows, ds, instruction, results)
                log(f"  {name}: done (served path only)")
                continue
            t0 = time.time()
            docs = vectors(ds.doc_texts, None, None, f"{row_names(rows)} {name} docs")
            qids = ds.eval_query_ids
            queries = vectors(
                [ds.queries[q] for q in qids],
                instruction,
                encoder.config.query_max_length,
                f"{name} queries",
            )
            for mode, row in by_mode.items():
                if name not in self.sets_for(row):
                    continue
                scores = score_dense(ds, queries[mode], docs[mode])
                results[row.label][name] = {
                    "dataset": name,
                    "docs": len(ds.doc_ids),
                    **scores.as_dict(),
                    "instruction": instruction,
                    "dtype": dtype,
                    "seconds_incl_encoding": round(time.time() - t0, 1),
                }
            if self.args.served:
                self.served_rows(encoder, rows, ds, instruction, results)
            log(f"  {name}: done")
        if self.args.served_only:
            return {k: v for k, v in results.items() if k not in {r.label for r in rows}}
        if self.sts is not None:
            instruction = default_instruction(encoder, "sts")
            sentences, a, b = unique_sentences(self.sts)
            vecs = vectors(sentences, instruction, None, "STS-B sentences")
            for mode, row in by_mode.items():
                rho, r = score_sts(self.sts.scores, vecs[mode][a], vecs[mode][b])
                results[row.label]["sts"] = {
                    "spearman": rho,
                    "pearson": r,
                    "pairs": len(self.sts),
                    "instruction": instruction,
                    "dtype": dtype,
                }
            log("  STS-B: done")
        if self.triples is not None and all(m in SIMPLE_POOLINGS for m in modes):
            echo = echo_prefix_test(encoder, self.triples, poolings=modes)
            for mode, row in by_mode.items():
                results[row.label]["echo"] = echo[mode].as_dict()
        return results

    def served_rows(
        self,
        encoder: Any,
        rows: Sequence[Row],
        ds: Any,
        instruction: str | None,
        results: dict[str, dict[str, Any]],
    ) -> None:
        """--served: the same encoder through the served path (chunked, edge store with HNSW,
        searched as /search does), as a row labelled "<label>, served path"."""
        from indexer.evaluation.served import evaluate_served_modes

        if rows[0].group:  # poolings sharing one forward pass: no single encoder to index with
            log(f"  {ds.name}: --served skipped for {row_names(rows)} (pooling group)")
            return
        row = rows[0]
        if ds.name not in self.sets_for(row):
            return
        t0 = time.time()
        modes = served_modes(self.args)
        served = evaluate_served_modes(
            encoder, ds, instruction=instruction, modes=modes, show_progress=self.args.progress
        )  # one index, searched in each mode
        for mode, result in zip(modes, served, strict=True):
            label = served_label(row.label, mode)
            entry = results.setdefault(label, {})
            entry["encoder"] = dict(results[row.label]["encoder"])
            entry[ds.name] = {
                **result.as_dict(),
                "dtype": encoder.dtype,
                "seconds_incl_encoding": round(time.time() - t0, 1),
            }


def served_label(label: str, mode: str = "dense") -> str:
    return f"{label}, served path" + ("" if mode == "dense" else f" {mode}")


def served_modes(args: argparse.Namespace) -> list[str]:
    """--served-mode (repeatable; default dense), deduplicated in order."""
    return list(dict.fromkeys(args.served_mode or ["dense"]))


def label_matches(label: str, texts: Sequence[str]) -> bool:
    """Whether ``label`` contains any of ``texts`` (case-insensitive): --rows, --skip and
    --mini-only-for select rows this way."""
    return any(t.lower() in label.lower() for t in texts)


def row_names(rows: Sequence[Row]) -> str:
    return rows[0].group or rows[0].label


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- report ----------------------------------------------------------------------------------
def pct(value: Any, digits: int = 1, mark: str = "") -> str:
    return "—" if value is None else f"{100 * float(value):.{digits}f}{mark}"


def bf16_mark(entry: dict[str, Any]) -> str:
    """A marker for numbers measured with a bfloat16 encoder (fp32 is the default)."""
    return "ᵇ" if entry.get("dtype") == "bfloat16" else ""


RETRIEVAL_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def cells(entry: dict[str, Any], metrics: Sequence[str]) -> str:
    """Table cells for ``metrics`` of one result entry, each marked if it was bf16."""
    mark = bf16_mark(entry)
    return " | ".join(pct(entry.get(m), 1, mark) for m in metrics)


def render(data: dict[str, Any], order: Sequence[str], skipped: Sequence[str]) -> str:
    results: dict[str, Any] = data.get("results", {})
    labels = [label for label in order if label in results]
    labels += [label for label in results if label not in labels]
    lines = [
        BEGIN,
        "## Retrieval and STS quality",
        "",
        f"Generated by `python bench/quality.py` ({data.get('updated', '?')}); raw numbers in "
        "`bench/out/quality.json`. All numbers ×100. SciFact = BEIR SciFact test split "
        "(5,183 docs, 300 queries); scifact-mini = 500 docs / 50 queries cut from it (easier: "
        "fewer distractors, so its numbers are higher and only comparable with each other). "
        "STS-B = Spearman ρ on the 1,379 test pairs. Echo = share of the Echo-embeddings "
        "prefix-probe triples where the shared prefix pooled inside each full sentence ranks "
        "s+ above s- (ties count half, 0.5 = chance; see `indexer/evaluation/echo.py`).",
        "",
        "| Encoder | SciFact nDCG@10 | R@100 | MRR@10 | mini nDCG@10 | mini R@100 | mini MRR@10 "
        "| STS-B ρ | Echo prefix |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        r = results[label]
        full = r.get("scifact", {})
        mini = r.get("scifact-mini", {})
        sts = r.get("sts", {})
        echo = r.get("echo", {})
        lines.append(
            f"| {label} | {cells(full, RETRIEVAL_METRICS)} | {cells(mini, RETRIEVAL_METRICS)} | "
            f"{cells(sts, ('spearman',))} | {pct(echo.get('prefix_accuracy'), 0)} |"
        )
    lines += [
        "",
        "Reference points (from `../shared/data/README.md`): BM25 SciFact nDCG@10 66.5 (BEIR "
        "paper, Elasticsearch) / 67.9 (Pyserini); all-MiniLM-L6-v2 SciFact 64.5, STS-B 82.0.",
        "",
        "How the rows are computed:",
        "- Dense rows: exact cosine top-100 over all documents (no ANN); documents are "
        '`title + " " + text`, encoded instruction-free; queries get the LLM2Vec SciFact '
        "instruction on decoder models and none on all-MiniLM-L6-v2 (trained without "
        "instructions). STS-B: the LLM2Vec STS instruction on both sentences for decoder models.",
        "- BM25: " + _bm25_note(results) + ".",
        "- SmolLM2 rows are the untrained SmolLM2-135M-Instruct: causal attention with three "
        "poolings (one shared forward pass), and the attention switched to bidirectional with "
        "mean pooling and no adaptation.",
        "- Trained and other rows (`bench/quality_rows.json`) name how they were built in the "
        "Adapter training and MoEE/Echo/poolers sections below.",
    ]
    if any(
        bf16_mark(r.get(k, {}))
        for r in results.values()
        for k in ("scifact", "scifact-mini", "sts")
    ):
        lines.append(
            "- ᵇ: encoded in bfloat16 (`--dtype bfloat16`; this CPU has avx512_bf16, where a "
            "SmolLM2 forward runs 2.6× faster than in fp32). The fp32 and bf16 numbers of one "
            "encoder are compared in the dtype section below."
        )
    note = data.get("note")
    if note:
        lines += ["", f"**Note:** {note}"]
    if skipped:
        lines += [
            "",
            "Listed in `bench/quality_rows.json` but not built yet: " + "; ".join(skipped),
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def _bm25_note(results: dict[str, Any]) -> str:
    for r in results.values():
        for key in ("scifact", "scifact-mini"):
            desc = r.get(key, {}).get("bm25")
            if desc:
                return desc + ' (Pyserini\'s BEIR settings), over `title + " " + text`'
    return "bm25s (Pyserini's BEIR settings)"


def update_markdown(path: Path, section: str) -> None:
    text = path.read_text() if path.is_file() else "# Ember benchmarks\n\n"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save(
    out: Path,
    results_md: Path,
    new: dict[str, dict[str, Any]],
    note: str | None,
    order: Sequence[str],
    skipped: Sequence[str],
) -> dict[str, Any]:
    """Merge ``new`` rows into ``out`` and rewrite the markdown section. Several runs may share
    the files (one per engineer's rows): the file is re-read under a lock, so none loses rows."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_name(out.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
        results = data.setdefault("results", {})
        for label, values in new.items():
            results.setdefault(label, {}).update(values)
        if note is not None:
            data["note"] = note
        data["updated"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(out)
        update_markdown(results_md, render(data, order, skipped))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    from indexer.evaluation import default_data_dir
    from indexer.evaluation.cache import default_cache_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mini", action="store_true", help="scifact-mini only (CI)")
    p.add_argument(
        "--mini-only-for",
        action="append",
        default=[],
        metavar="TEXT",
        help="rows whose label contains TEXT skip full SciFact (repeatable)",
    )
    p.add_argument("--rows", action="append", default=[], metavar="TEXT", help="only these rows")
    p.add_argument(
        "--skip", action="append", default=[], metavar="TEXT", help="leave these rows out"
    )
    p.add_argument(
        "--sets",
        action="append",
        default=[],
        choices=list(SCIFACT_SETS),
        help="only these SciFact sets (repeatable; default: both, or scifact-mini with --mini)",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "int8"],
        default=None,
        help="encode with this dtype instead of the encoder's own (numbers get a ᵇ mark in the "
        "table when bfloat16)",
    )
    p.add_argument("--row", action="append", default=[], metavar="LABEL=SPEC", help="extra row")
    p.add_argument(
        "--served",
        action="store_true",
        help="also evaluate each encoder row through the served path (chunked, edge store with "
        "HNSW, one hit per document) as a row '<label>, served path'",
    )
    p.add_argument(
        "--served-mode",
        action="append",
        choices=["dense", "hybrid"],
        default=[],
        help="with --served (repeatable; default dense): each mode searches the same index, "
        "hybrid rows are labelled '<label>, served path hybrid'",
    )
    p.add_argument(
        "--served-only",
        action="store_true",
        help="only the served-path rows (implies --served, --no-sts, --no-echo): the exact rows "
        "already in the table are left as they are",
    )
    p.add_argument("--no-sts", action="store_true")
    p.add_argument("--no-echo", action="store_true")
    p.add_argument("--note", default=None, help="a note printed under the table")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--cache-dir", default=str(default_cache_dir()))
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "quality.json"))
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    if args.served_only:
        args.served = args.no_sts = args.no_echo = True

    rows = builtin_rows()
    more, skipped = extra_rows(args.row)
    rows += more
    if args.rows:
        rows = [r for r in rows if label_matches(r.label, args.rows)]
    rows = [r for r in rows if not label_matches(r.label, args.skip)]

    out = Path(args.out)
    runner = Runner(args)
    all_labels = [r.label for r in builtin_rows()] + [r.label for r in more]
    if args.served:  # each served row right after its exact row
        all_labels = [
            x
            for label in all_labels
            for x in (label, *(served_label(label, m) for m in served_modes(args)))
        ]

    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group or row.label, []).append(row)
    for members in groups.values():
        log(f"== {', '.join(r.label for r in members)}")
        if members[0].kind == "bm25":
            new = {members[0].label: runner.bm25(members[0])}
        else:
            new = runner.encoder_rows(members)
        save(out, Path(args.results), new, args.note, all_labels, skipped)
    if not groups:
        save(out, Path(args.results), {}, args.note, all_labels, skipped)
    log(f"wrote {out} and {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
