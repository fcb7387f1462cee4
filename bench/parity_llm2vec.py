"""Parity of Ember's encoder with the reference implementation, llm2vec 0.2.3.

    .venv/bin/python bench/parity_llm2vec.py [--out bench/out/parity.json] [--workdir DIR]
                                             [--no-smollm2] [--no-minilm]

Runs from Ember's venv and drives the reference venv ``.venv-ref`` (built by ``bench/ref_env.sh``
when missing: llm2vec 0.2.3, transformers 4.44.2, peft 0.13.2, torch 2.13 CPU).

1. Tiny random models as HF folders both stacks read: the tokenizer is trained and saved by the
   old stack (``bench/_ref/make_tokenizer.py``), the model is built here from
   ``encoders.testing.tiny_config`` and saved by transformers 5, then ``config.json`` gets the flat
   keys transformers 4.44 reads (``rope_theta``, ``torch_dtype``). Three cases: Llama with a
   byte-level tokenizer without BOS (SmolLM2 / GPT-2 style), Llama with a byte-level tokenizer
   that adds ``<s>`` (Llama-3 style), Mistral with a Metaspace tokenizer that adds ``<s>``
   (Mistral / Llama-2 SentencePiece style).
2. llm2vec encodes a fixed sentence list (``bench/_ref/llm2vec_encode.py``) at batch size 1 for
   every attention mode x pooling x with/without instruction.
3. Ember encodes the same sentences in one padded batch, padding left and right, and the script
   compares per-sentence cosines, the token ids, and the number of tokens each side pools over.
   A second cosine ("same tokens") pools Ember's hidden states over exactly llm2vec's pooled token
   set, which separates a model-path difference from a pooling-set difference.
4. The real SmolLM2-135M-Instruct (when its fp32 folder is cached or can be built) through the
   two Ember presets and last_token, plus a pooled-count check of the instructed SciFact queries.
5. Bonus: Ember's MiniLM preset vs sentence-transformers 3.0.1 on the same folder.

Requirement: cosine >= 0.99999 for every sentence. Exit status 1 if any row misses it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "bench"):  # run as a script: make `encoders` and `refenv` importable
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from refenv import REF_VENV, cosines, ensure_ref_env, legacy_config, ref_view, run_ref  # noqa: E402

from encoders.config import EncoderConfig  # noqa: E402
from encoders.encoder import Encoder, Tokenized  # noqa: E402
from encoders.instructions import TASKS  # noqa: E402

THRESHOLD = 0.99999
DATA = REPO.parent / "shared" / "data" / "beir" / "scifact"

INSTRUCTION = TASKS["scifact"]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Vitamin D deficiency is associated with an increased risk of infection in adults.",
    "Genes",
    "what is the risk of infection?",
    "Proteins fold into shapes that decide what the cells can do.",
    "0 1 2 3 4 5 6 7 8 9",
    "Search engines rank documents by the cosine similarity of their embeddings, and large "
    "language models turn text into vectors when their attention is bidirectional.",
    "A claim about cells, genes and proteins: 42 of 100 adults had a deficiency.",
]
TOKENIZER_CORPUS = [
    *SENTENCES,
    INSTRUCTION,
    "Retrieve relevant passages that answer the query about proteins, cells and genes.",
    "Given a question, find the passage that answers it. The cat sat on the mat.",
]
POOLINGS = ("mean", "weighted_mean", "last_token")
ATTENTIONS = ("bidirectional", "causal")


@dataclass(frozen=True)
class ModelCase:
    name: str
    family: str
    tokenizer_style: str  # "bytelevel" | "qwen2" | "metaspace"
    bos: bool
    like: str


TINY_CASES = (
    ModelCase("llama-bytelevel", "llama", "bytelevel", False, "SmolLM2 / GPT-2 tokenizer"),
    ModelCase("llama-bytelevel-bos", "llama", "bytelevel", True, "Llama-3 tokenizer"),
    ModelCase("mistral-metaspace-bos", "mistral", "metaspace", True, "Mistral / Llama-2 tokenizer"),
)
SMOLLM2_RUNS = (
    ("bidirectional", "mean"),  # preset smollm2-bi
    ("causal", "weighted_mean"),  # preset smollm2 (default)
    ("bidirectional", "last_token"),
)


@dataclass
class Row:
    model: str
    attention: str
    pooling: str
    instruction: bool
    padding_side: str
    min_cosine: float
    min_cosine_same_tokens: float
    ids_identical: bool
    pooled_counts_agree: int  # sentences whose pooled token count matches llm2vec's
    sentences: int
    cosines: list[float] = field(default_factory=list)
    count_mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def min_cosine_counts_agree(self) -> float:
        skip = {m["sentence"] for m in self.count_mismatches}
        return min((c for i, c in enumerate(self.cosines) if i not in skip), default=1.0)

    @property
    def passed(self) -> bool:
        """Token ids identical, the model path matches on llm2vec's token set, and every sentence
        matches end to end unless llm2vec's own text-alone count misplaces the instruction
        boundary (see :func:`mismatch_cause`)."""
        excused = {
            m["sentence"] for m in self.count_mismatches if m["cause"] == INSTRUCTION_BOUNDARY
        }
        return (
            self.ids_identical
            and self.min_cosine_same_tokens >= THRESHOLD
            and all(c >= THRESHOLD for i, c in enumerate(self.cosines) if i not in excused)
        )


# ---- model folders ---------------------------------------------------------------------------
def build_tiny_folder(case: ModelCase, root: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    from encoders.testing import tiny_config

    folder = root / case.name
    spec = {
        "folder": str(folder),
        "style": case.tokenizer_style,
        "bos": case.bos,
        "vocab_size": 400,
        "corpus": TOKENIZER_CORPUS,
    }
    out = run_ref("make_tokenizer.py", spec, root)
    vocab_size = int(json.loads(out.strip().splitlines()[-1])["vocab_size"])
    torch.manual_seed(seed)
    # A larger init than the default 0.02 so attention visibly changes the vectors (the causal vs
    # bidirectional control must sit far below the 0.99999 threshold).
    model = AutoModelForCausalLM.from_config(
        tiny_config(case.family, vocab_size, initializer_range=0.2)
    )
    model.save_pretrained(folder)
    cfg_file = folder / "config.json"
    cfg_file.write_text(json.dumps(legacy_config(json.loads(cfg_file.read_text())), indent=2))
    return folder


# ---- comparison ------------------------------------------------------------------------------
INSTRUCTION_BOUNDARY = "instruction-boundary"
LEADING_SPECIAL = "leading-special-token"


def mismatch_cause(enc: Encoder, text: str, item: Tokenized, n_ref: int) -> str:
    """Why Ember and llm2vec pool a different number of tokens for one input.

    llm2vec pools the last ``len(tokenize(text))`` tokens, counting the text tokenised alone.
    - ``instruction-boundary``: after the instruction the model sees ``" " + text``, and a
      byte-level BPE tokenises ``" AZT"`` (``ĠAZ T``) differently from ``"AZT"`` (``A Z T``), so
      llm2vec's count is off and it pools the instruction's last token or drops the text's first;
      Ember's character offsets are exact. Recognised when Ember's text tokens are exactly the
      tokens of ``" " + text`` and their count differs from that of ``text`` alone.
    - ``leading-special-token``: Ember pools a BOS the tokenizer adds, which llm2vec leaves out
      (Ember did so without an instruction until 63a7639; kept as a regression check).
    """
    tok = enc.tokenizer
    if item.text_start == 0:
        specials = set(tok.all_special_ids)
        lead = next((i for i, t in enumerate(item.ids) if t not in specials), len(item.ids))
        if lead and len(item.ids) - lead == n_ref:
            return LEADING_SPECIAL
        return "other"
    alone = tok(text, add_special_tokens=False)["input_ids"]
    spaced = tok(" " + text, add_special_tokens=False)["input_ids"]
    in_context = item.ids[item.text_start :]
    if in_context == spaced and len(alone) == n_ref != len(spaced):
        return INSTRUCTION_BOUNDARY
    return "other"


def run_name(attention: str, pooling: str, with_instruction: bool) -> str:
    return f"{attention}-{pooling}-{'instr' if with_instruction else 'plain'}"


def ember_same_tokens(
    enc: Encoder, items: Sequence[Tokenized], pooled: Sequence[int]
) -> np.ndarray:
    """Ember's forward pass, pooled over the last ``pooled[i]`` tokens as llm2vec does."""
    same = [Tokenized(it.ids, len(it.ids) - n) for it, n in zip(items, pooled, strict=True)]
    with torch.inference_mode():
        return enc.embed_batch(same).float().numpy()


def compare(
    label: str,
    ember_folder: Path,
    ref_folder: Path,
    combos: Sequence[tuple[str, str]],
    workdir: Path,
    count_sentences: Sequence[str] = (),
) -> tuple[list[Row], dict[str, Any]]:
    """llm2vec on ``ref_folder`` vs Ember on ``ember_folder`` for each (attention, pooling),
    with and without instruction, Ember padding left and right."""
    runs = [
        {
            "name": run_name(att, pool, instr),
            "bidirectional": att == "bidirectional",
            "pooling": pool,
            "with_instruction": instr,
        }
        for att, pool in combos
        for instr in (False, True)
    ]
    ref_out = workdir / f"{label}-llm2vec"
    spec = {
        "folder": str(ref_folder),
        "sentences": SENTENCES,
        "instruction": INSTRUCTION,
        "out": str(ref_out),
        "runs": runs,
        "count_sentences": list(count_sentences),
    }
    run_ref("llm2vec_encode.py", spec, workdir)
    meta = json.loads((ref_out / "meta.json").read_text())
    rows: list[Row] = []
    ember_vecs: dict[str, np.ndarray] = {}
    encoders: dict[str, Encoder] = {}
    for run in runs:
        name, pooling = str(run["name"]), str(run["pooling"])
        attention = "bidirectional" if run["bidirectional"] else "causal"
        ref_vecs = np.load(ref_out / f"{name}.npy")
        ref_meta = meta["runs"][name]
        instruction = INSTRUCTION if run["with_instruction"] else None
        for side in ("left", "right"):
            enc = Encoder.from_config(
                EncoderConfig(
                    base_model=str(ember_folder),
                    attention=attention,  # type: ignore[arg-type]
                    pooling=pooling,  # type: ignore[arg-type]
                    padding_side=side,
                    normalize=False,
                    max_length=512,
                )
            )
            encoders[attention] = enc
            vecs = enc.encode(SENTENCES, instruction=instruction)  # one padded batch
            ember_vecs[f"{name}-{side}"] = vecs
            items = enc.tokenize(SENTENCES, instruction, 512)
            pools_span = pooling in ("mean", "weighted_mean")
            mismatches = []
            for i, (it, n_ref) in enumerate(zip(items, ref_meta["pooled_tokens"], strict=True)):
                n_ember = len(it.ids) - it.text_start
                if pools_span and n_ember != n_ref:
                    mismatches.append(
                        {
                            "sentence": i,
                            "ember": n_ember,
                            "llm2vec": n_ref,
                            "total": len(it.ids),
                            "cause": mismatch_cause(enc, SENTENCES[i], it, n_ref),
                        }
                    )
            same = ember_same_tokens(enc, items, ref_meta["pooled_tokens"]) if pools_span else vecs
            cos = cosines(vecs, ref_vecs)
            rows.append(
                Row(
                    model=label,
                    attention=attention,
                    pooling=pooling,
                    instruction=bool(run["with_instruction"]),
                    padding_side=side,
                    min_cosine=float(cos.min()),
                    min_cosine_same_tokens=float(cosines(same, ref_vecs).min()),
                    ids_identical=[it.ids for it in items] == ref_meta["ids"],
                    pooled_counts_agree=len(SENTENCES) - len(mismatches),
                    sentences=len(SENTENCES),
                    cosines=[float(c) for c in cos],
                    count_mismatches=mismatches,
                )
            )
    extra: dict[str, Any] = {
        "llm2vec_model_class": {n: meta["runs"][n]["model_class"] for n in meta["runs"]},
        "llm2vec_attn_implementation": meta["runs"][str(runs[0]["name"])]["attn_implementation"],
    }
    # Negative control: the cosine must see an attention-mode difference (sentences of >= 2
    # tokens; a 1-token sentence is the same in both modes).
    bi_key = next((k for k in ember_vecs if k.startswith("bidirectional-mean-plain")), None)
    causal_key = next((k for k in ember_vecs if k.startswith("causal-mean-plain")), None)
    if bi_key and causal_key:
        multi = [len(it.ids) >= 2 for it in encoders["causal"].tokenize(SENTENCES, None, 512)]
        cos = cosines(ember_vecs[bi_key], ember_vecs[causal_key])[multi]
        extra["max_cosine_bidirectional_vs_causal"] = float(cos.max())
    if count_sentences:
        enc = next(iter(encoders.values()))
        items = enc.tokenize(count_sentences, INSTRUCTION, 512)
        ref_counts = meta["counts"]
        diff = [
            {
                "text": t,
                "ember": len(it.ids) - it.text_start,
                "llm2vec": n,
                "cause": mismatch_cause(enc, t, it, n),
                "text_alone": enc.tokenizer.convert_ids_to_tokens(
                    enc.tokenizer(t, add_special_tokens=False)["input_ids"][:4]
                ),
                "in_context": enc.tokenizer.convert_ids_to_tokens(
                    it.ids[it.text_start - 1 : it.text_start + 3]
                ),
            }
            for t, it, n in zip(count_sentences, items, ref_counts["pooled_tokens"], strict=True)
            if len(it.ids) - it.text_start != n
        ]
        extra["instructed_counts"] = {
            "sentences": len(count_sentences),
            "ids_identical": sum(
                it.ids == r for it, r in zip(items, ref_counts["ids"], strict=True)
            ),
            "pooled_counts_agree": len(count_sentences) - len(diff),
            "llm2vec_pools_one_more": sum(d["llm2vec"] > d["ember"] for d in diff),
            "llm2vec_pools_fewer": sum(d["llm2vec"] < d["ember"] for d in diff),
            "causes": {c: sum(d["cause"] == c for d in diff) for c in {d["cause"] for d in diff}},
            "examples": diff[:5],
        }
    return rows, extra


def smollm2_parity(workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    from encoders.loading import smollm2_folder

    folder = smollm2_folder()
    view = ref_view(folder, workdir / "smollm2-ref-view")
    queries: list[str] = []
    qfile = DATA / "queries.jsonl"
    if qfile.is_file():
        queries = [json.loads(line)["text"] for line in qfile.read_text().splitlines() if line]
    return compare("smollm2-135m (real)", folder, view, SMOLLM2_RUNS, workdir, queries)


def minilm_vs_sentence_transformers(workdir: Path) -> dict[str, Any]:
    """Bonus: Ember's MiniLM preset against sentence-transformers on the same folder."""
    from encoders.loading import minilm_folder
    from encoders.registry import load_encoder

    folder = minilm_folder()
    out = workdir / "minilm-st"
    spec = {"folder": str(folder), "sentences": SENTENCES, "prompt": INSTRUCTION + " "}
    run_ref("st_encode.py", {**spec, "out": str(out)}, workdir)
    enc = load_encoder("minilm")
    plain = enc.encode(SENTENCES)
    instructed = enc.encode(SENTENCES, instruction=INSTRUCTION)
    return {
        "folder": str(folder),
        "min_cosine_plain": float(cosines(plain, np.load(out / "plain.npy")).min()),
        "min_cosine_prompt_excluded": float(cosines(instructed, np.load(out / "prompt.npy")).min()),
    }


# ---- report ----------------------------------------------------------------------------------
def format_table(rows: Sequence[Row]) -> str:
    head = (
        f"{'model':<21} {'attention':<13} {'pooling':<13} {'instr':<5} {'pad':<5} "
        f"{'min cos':>9} {'n agree':>9} {'same tok':>9} {'ids':>4} {'pooled n':>8}  ok"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        instr = "yes" if r.instruction else "no"
        lines.append(
            f"{r.model:<21} {r.attention:<13} {r.pooling:<13} {instr:<5} "
            f"{r.padding_side:<5} {r.min_cosine:>9.7f} {r.min_cosine_counts_agree:>9.7f} "
            f"{r.min_cosine_same_tokens:>9.7f} {'=' if r.ids_identical else 'DIFF':>4} "
            f"{r.pooled_counts_agree:>4}/{r.sentences:<3}  {'PASS' if r.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def summarize_mismatches(rows: Sequence[Row]) -> list[str]:
    out = []
    for r in rows:
        if r.count_mismatches and r.padding_side == "right":
            deltas = sorted({m["ember"] - m["llm2vec"] for m in r.count_mismatches})
            causes = sorted({m["cause"] for m in r.count_mismatches})
            out.append(
                f"  pooled-count mismatch {r.model} {r.attention} {r.pooling} "
                f"instr={'yes' if r.instruction else 'no'}: {len(r.count_mismatches)}/{r.sentences}"
                f" sentences, Ember - llm2vec = {deltas} token(s), cause {', '.join(causes)}"
            )
    return out


def markdown_summary(result: dict[str, Any]) -> str:
    """One line per model x attention x pooling (both padding sides folded into the minimum)."""
    rows = rows_of(result)
    keys = list(dict.fromkeys((r.model, r.attention, r.pooling) for r in rows))
    lines = [
        "| model | attention | pooling | min cos, no instr | min cos, instr "
        "| same-token min cos | pooled n agree (no instr / instr) | ok |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for key in keys:
        group = [r for r in rows if (r.model, r.attention, r.pooling) == key]
        plain = [r for r in group if not r.instruction and r.padding_side == "right"]
        instr = [r for r in group if r.instruction and r.padding_side == "right"]
        n = group[0].sentences
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} "
            f"| {min(r.min_cosine for r in group if not r.instruction):.7f} "
            f"| {min(r.min_cosine for r in group if r.instruction):.7f} "
            f"| {min(r.min_cosine_same_tokens for r in group):.7f} "
            f"| {plain[0].pooled_counts_agree}/{n} / {instr[0].pooled_counts_agree}/{n} "
            f"| {'PASS' if all(r.passed for r in group) else 'FAIL'} |"
        )
    return "\n".join(lines)


def run_parity(
    workdir: Path, *, with_smollm2: bool = True, with_minilm: bool = True
) -> dict[str, Any]:
    ensure_ref_env()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    combos = [(att, pool) for att in ATTENTIONS for pool in POOLINGS]
    rows: list[Row] = []
    extras: dict[str, Any] = {}
    for case in TINY_CASES:
        folder = build_tiny_folder(case, workdir)
        case_rows, extra = compare(case.name, folder, folder, combos, workdir)
        rows += case_rows
        extras[case.name] = extra
    if with_smollm2:
        case_rows, extra = smollm2_parity(workdir)
        rows += case_rows
        extras[case_rows[0].model] = extra
    result: dict[str, Any] = {
        "reference": {"venv": str(REF_VENV), "llm2vec": "0.2.3", "batch_size": 1},
        "threshold": THRESHOLD,
        "instruction": INSTRUCTION,
        "sentences": SENTENCES,
        "tiny_models": [asdict(c) for c in TINY_CASES],
        "rows": [
            asdict(r) | {"passed": r.passed, "min_cosine_counts_agree": r.min_cosine_counts_agree}
            for r in rows
        ],
        "extras": extras,
        "all_passed": all(r.passed for r in rows),
    }
    if with_minilm:
        result["minilm_vs_sentence_transformers"] = minilm_vs_sentence_transformers(workdir)
    return result


def rows_of(result: dict[str, Any]) -> list[Row]:
    derived = {"passed", "min_cosine_counts_agree"}
    return [Row(**{k: v for k, v in r.items() if k not in derived}) for r in result["rows"]]


def report(result: dict[str, Any]) -> str:
    rows = rows_of(result)
    lines = [format_table(rows), *summarize_mismatches(rows)]
    for name, extra in result["extras"].items():
        if "max_cosine_bidirectional_vs_causal" in extra:
            lines.append(
                f"control {name}: max cos(bidirectional, causal) = "
                f"{extra['max_cosine_bidirectional_vs_causal']:.5f}"
            )
        if "instructed_counts" in extra:
            c = extra["instructed_counts"]
            lines.append(
                f"{name}: instructed SciFact queries: ids identical {c['ids_identical']}/"
                f"{c['sentences']}, pooled counts agree {c['pooled_counts_agree']}/{c['sentences']}"
                f" (llm2vec pools one more: {c['llm2vec_pools_one_more']}, fewer: "
                f"{c['llm2vec_pools_fewer']}; causes {c['causes']})"
            )
            lines += [f"    e.g. {e}" for e in c["examples"][:3]]
    if "minilm_vs_sentence_transformers" in result:
        st = result["minilm_vs_sentence_transformers"]
        lines.append(
            f"MiniLM vs sentence-transformers 3.0.1: min cos plain {st['min_cosine_plain']:.7f}, "
            f"prompt excluded {st['min_cosine_prompt_excluded']:.7f}"
        )
    lines.append(f"all passed: {result['all_passed']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "parity.json")
    ap.add_argument("--workdir", type=Path, default=None, help="keep model folders here")
    ap.add_argument("--no-smollm2", action="store_true", help="skip the real SmolLM2 check")
    ap.add_argument("--no-minilm", action="store_true", help="skip the sentence-transformers check")
    ap.add_argument(
        "--markdown", type=Path, default=None, help="summarise an existing JSON result and exit"
    )
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_summary(json.loads(args.markdown.read_text())))
        return 0
    with tempfile.TemporaryDirectory(prefix="ember-parity-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run_parity(
            workdir, with_smollm2=not args.no_smollm2, with_minilm=not args.no_minilm
        )
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0 if result["all_passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
