"""The Echo prefix test for echo encoders too: the prefix tokens are found by character offsets in
the string the model reads, so an echo encoder pools the prefix inside the *second* copy (which,
under causal attention, has already read the whole sentence once), where ``ember eval echo``
(token agreement with the prefix encoded alone) cannot place them.

For a plain encoder the tokens found are the same as ``ember eval echo``'s, so the numbers agree.

    python bench/echo_prefix.py smollm2 smollm2-echo smollm2-bi

Prints one line per encoder and writes ``bench/out/echo_prefix.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def prefix_positions(encoder: object, sentence: str, prefix: str) -> tuple[list[int], list[int]]:
    """Token ids of the composed sentence and the positions of ``prefix``'s tokens in its pooled
    copy (a token belongs to it if its span ends after the copy starts and within the prefix)."""
    full, start = encoder.compose(sentence, None)  # type: ignore[attr-defined]
    enc = encoder.tokenizer(  # type: ignore[attr-defined]
        full,
        add_special_tokens=True,
        truncation=True,
        max_length=encoder.config.max_length,  # type: ignore[attr-defined]
        return_offsets_mapping=True,
    )
    end = start + len(prefix)
    spans = enc["offset_mapping"]
    positions = [i for i, (a, b) in enumerate(spans) if (a, b) != (0, 0) and start < b <= end]
    return list(enc["input_ids"]), positions


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from encoders import load_encoder
    from encoders.encoder import Tokenized
    from indexer.evaluation import load_echo_triples
    from indexer.evaluation.data import default_data_dir
    from indexer.evaluation.echo import TIE_TOL, shared_word_count, word_prefix

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("encoders", nargs="+")
    p.add_argument("--data", default=str(default_data_dir() / "echo_toy_triples_paper_subset.json"))
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "echo_prefix.json"))
    args = p.parse_args(argv)
    triples = load_echo_triples(args.data)
    probes = [(t, shared_word_count([t.query, t.positive, t.negative])) for t in triples]
    usable = [(t, n) for t, n in probes if n > 0]
    results = {}
    for spec in args.encoders:
        encoder = load_encoder(spec)
        vectors = []
        for t, n in usable:
            for s in (t.query, t.positive, t.negative):
                ids, positions = prefix_positions(encoder, s, word_prefix(s, n))
                if not positions:
                    raise SystemExit(f"{spec}: no prefix tokens found in {s!r}")
                batch = encoder.collate([Tokenized(ids=ids, text_start=0)])
                with torch.inference_mode():
                    hidden = encoder.hidden_states(batch).last_hidden_state[0]  # type: ignore[attr-defined]
                v = hidden[positions].mean(0).float().numpy()
                vectors.append(v / max(float(np.linalg.norm(v)), 1e-12))
        wins = ties = losses = 0
        for k in range(len(usable)):
            q, pos, neg = vectors[3 * k : 3 * k + 3]
            d = float(q @ pos) - float(q @ neg)
            wins += d > TIE_TOL
            ties += abs(d) <= TIE_TOL
            losses += d < -TIE_TOL
        accuracy = (wins + ties / 2) / len(usable)
        results[spec] = {
            "attention": encoder.config.attention,
            "echo": encoder.config.echo,
            "pooling": "mean over the prefix tokens",
            "prefix_accuracy": accuracy,
            "wins": wins,
            "ties": ties,
            "losses": losses,
            "probes": len(usable),
        }
        print(
            f"{spec:>14} ({encoder.config.attention}, echo={encoder.config.echo}): prefix test "
            f"{100 * accuracy:.1f}% over {len(usable)} probes (wins {wins}, ties {ties}, "
            f"losses {losses})"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
