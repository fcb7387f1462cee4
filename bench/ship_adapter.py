"""Turn a trained encoder folder into the small artifact a preset ships inside the package.

A trained chain is a stack of LoRA adapters (MNTP, then supervised), each merged into the
weights before the next was trained, so the final weights are W0 + sum_i s_i B_i A_i. This
script adds the stack up per linear layer, keeps the top ``--rank`` singular directions of the
sum (exact when the stack's total rank fits, otherwise the best rank-r approximation in the
Frobenius norm) and writes ONE peft LoRA adapter in fp16 plus an ``encoder_config.json`` that
points at it. It then encodes a fixed sample of SciFact documents and queries with the trained
folder and with the shipped one and reports their cosine, so the cost of the compression is a
number (the shipped folder is also what the quality table evaluates).

    python bench/ship_adapter.py bench/out/train/e-sup --out encoders/presets/smollm2-ember \
        --rank 16 --name smollm2-ember [--stats FOLDER]
    python bench/ship_adapter.py --restat encoders/presets/smollm2-ember --stats FOLDER

``--stats FOLDER``: copy the corpus-fitted standardisation of an ``ember fit-stats`` folder;
``--restat PRESET`` does only that for a preset already shipped (its adapter unchanged).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from encoders import Encoder, EncoderConfig  # noqa: E402
from encoders.config import CONFIG_FILE, AdapterSpec  # noqa: E402

ADAPTER = "adapter"


def stack_deltas(config: EncoderConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Module name -> summed delta (d_out x d_in, fp32) over every adapter of the stack."""
    deltas: dict[str, torch.Tensor] = {}
    targets: set[str] = set()
    for spec in config.adapters:
        folder = Path(spec.path)
        meta = json.loads((folder / "adapter_config.json").read_text())
        if meta.get("use_dora") or meta.get("use_rslora") or meta.get("rank_pattern"):
            raise SystemExit(f"{folder}: only plain LoRA adapters can be combined")
        scale = float(meta["lora_alpha"]) / float(meta["r"])
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        pairs: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for key, value in tensors.items():
            if ".lora_A." in key:
                pairs[key.split(".lora_A.")[0]]["A"] = value.float()
            elif ".lora_B." in key:
                pairs[key.split(".lora_B.")[0]]["B"] = value.float()
            else:
                raise SystemExit(f"{folder}: unexpected tensor {key} (not a LoRA factor)")
        for module, ab in pairs.items():
            delta = scale * ab["B"] @ ab["A"]
            deltas[module] = deltas[module] + delta if module in deltas else delta
            targets.add(module.rsplit(".", 1)[-1])
    return deltas, sorted(targets)


def factor(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """B [d_out, r], A [r, d_in] with B @ A the best rank-r approximation; relative error."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    b = (u[:, :r] * root).float()
    a = (root[:, None] * vh[:r]).float()
    kept = float((s[:r] ** 2).sum() / (s**2).sum().clamp(min=1e-30))
    return b, a, 1.0 - kept


def write_adapter(
    deltas: dict[str, torch.Tensor], targets: list[str], rank: int, folder: Path
) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    errors: dict[str, float] = {}
    for module, delta in sorted(deltas.items()):
        b, a, err = factor(delta, rank)
        tensors[f"{module}.lora_A.weight"] = a.half().contiguous()
        tensors[f"{module}.lora_B.weight"] = b.half().contiguous()
        errors[module] = err
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    meta = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": float(rank),  # scale 1: the factors carry the whole delta
        "lora_dropout": 0.0,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "base_model_name_or_path": None,
        "task_type": None,
    }
    (folder / "adapter_config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return errors


def sample_texts(n: int = 48) -> tuple[list[str], list[str]]:
    data = ROOT / ".." / "shared" / "data" / "beir" / "scifact"
    rows = [json.loads(x) for x in (data / "corpus.jsonl").read_text().splitlines() if x.strip()]
    qs = [json.loads(x)["text"] for x in (data / "queries.jsonl").read_text().splitlines() if x]
    rng = random.Random(0)
    docs = [f"{r.get('title', '')} {r['text']}".strip() for r in rng.sample(rows, n)]
    return docs, rng.sample(qs, n)


def write_anchor(folder: Path) -> Encoder:
    """A regression anchor for tests/encoders/test_packaged_presets.py: three texts and the
    vectors the shipped folder gives them (fp32, this script's torch)."""
    from indexer.evaluation import default_instruction

    ship = Encoder.load(folder)
    docs = ["Aspirin lowers the risk of a first heart attack.", "Cats sleep a lot."]
    query = "Does vitamin D prevent infections?"
    instruction = default_instruction(ship, "scifact")
    anchor = {
        "fingerprint": ship.fingerprint,
        "documents": docs,
        "query": query,
        "instruction": instruction,
        "document_vectors": ship.encode(docs).round(6).tolist(),
        "query_vector": ship.encode_queries([query], instruction)[0].round(6).tolist(),
    }
    (folder / "reference_vectors.json").write_text(json.dumps(anchor) + "\n")
    return ship


def restat(folder: Path, stats_folder: Path) -> int:
    """``--restat``: give an already shipped preset the standardisation of an ``ember fit-stats``
    folder fitted on it (the adapter is unchanged), then rewrite its anchor and report."""
    shipped = EncoderConfig.load(folder)
    stats = EncoderConfig.load(stats_folder).standardize
    if stats is None or stats.whitening:
        raise SystemExit(f"--stats {stats_folder}: no (unwhitened) standardisation there")
    fitted_on = EncoderConfig.load(stats_folder).model_copy(update={"standardize": None})
    if fitted_on.fingerprint() != shipped.model_copy(update={"standardize": None}).fingerprint():
        raise SystemExit(f"--stats {stats_folder} was fitted on another encoder than {folder}")
    # saved from the config as written (relative adapter path), not the resolved one: the
    # package must not name the folder it was built in
    as_written = EncoderConfig.model_validate_json((folder / CONFIG_FILE).read_text())
    as_written.model_copy(update={"standardize": stats}).save(folder)
    ship = write_anchor(folder)
    report_path = folder / "ship_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report.update(
        fingerprint=ship.fingerprint, standardize=stats.source, stats_samples=stats.samples
    )
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "trained", type=Path, nargs="?", help="trained encoder folder (its adapter stack)"
    )
    p.add_argument(
        "--restat",
        type=Path,
        default=None,
        metavar="PRESET",
        help="only give the shipped PRESET folder the --stats standardisation",
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--name", default=None)
    p.add_argument("--stats", type=Path, default=None, help="ember fit-stats folder to copy")
    p.add_argument("--check", type=int, default=48, help="docs and queries compared (0: none)")
    args = p.parse_args()
    if args.restat is not None:
        if args.stats is None:
            p.error("--restat needs --stats")
        return restat(args.restat, args.stats)
    if args.trained is None:
        p.error("the trained folder is required")

    if args.out is None:
        p.error("--out is required")
    trained = EncoderConfig.load(args.trained)
    if not trained.adapters or trained.pooler or trained.kind != "llm2vec":
        raise SystemExit("ship_adapter handles llm2vec encoders with a LoRA stack and no pooler")
    deltas, targets = stack_deltas(trained)
    errors = write_adapter(deltas, targets, args.rank, args.out / ADAPTER)
    stats = EncoderConfig.load(args.stats).standardize if args.stats else None
    if args.stats and stats is None:
        raise SystemExit(f"--stats {args.stats}: that encoder has no standardisation")
    if stats is not None and stats.whitening:
        raise SystemExit("--stats: whitened statistics are not shipped (a D x D file)")
    shipped = trained.model_copy(
        update={
            "name": args.name or trained.name,
            "adapters": [AdapterSpec(path=ADAPTER, merged=True)],
            "standardize": stats,
        }
    )
    shipped.save(args.out)
    worst = max(errors.values())
    size = (args.out / ADAPTER / "adapter_model.safetensors").stat().st_size
    report: dict[str, object] = {
        "trained": str(args.trained),
        "rank": args.rank,
        "modules": len(errors),
        "adapter_bytes": size,
        "max_relative_energy_lost": worst,
        "mean_relative_energy_lost": sum(errors.values()) / len(errors),
    }
    if args.check:
        docs, queries = sample_texts(args.check)
        reference = Encoder.from_config(trained.model_copy(update={"standardize": stats}))
        ship = Encoder.load(args.out)
        from indexer.evaluation import default_instruction

        instruction = default_instruction(ship, "scifact")
        cos_d = (reference.encode(docs) * ship.encode(docs)).sum(1)
        cos_q = (
            reference.encode_queries(queries, instruction)
            * ship.encode_queries(queries, instruction)
        ).sum(1)
        report.update(
            min_cos_docs=float(cos_d.min()),
            mean_cos_docs=float(cos_d.mean()),
            min_cos_queries=float(cos_q.min()),
            mean_cos_queries=float(cos_q.mean()),
        )
    ship = write_anchor(args.out)
    report["fingerprint"] = ship.fingerprint
    (args.out / "ship_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
