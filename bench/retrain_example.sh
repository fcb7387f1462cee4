#!/usr/bin/env bash
# The retraining loop end to end with the bundled models (README "Retraining loop", worked
# example): serve scifact-mini with the untrained bidirectional SmolLM2 (`smollm2-bi`), retrain
# it with the supervised stage on SNLI triples plus (title, abstract) pairs of the corpus itself,
# score candidate and current on a held-out evaluation set, and let the job promote or reject.
#
#   bash bench/retrain_example.sh            # in-process (no broker), ~45 min on a shared 2-core CPU
#
# The evaluation set is the SciFact *train* queries whose judged documents all lie in
# scifact-mini's 500 (95 queries): a train split, never the test split, and not used to train.
# Everything goes under bench/out/retrain-example/ (store, job records, candidate, log).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"
BIN="${BIN:-.venv/bin}"
DATA="$repo/../shared/data"
OUT="$repo/bench/out/retrain-example"
rm -rf "$OUT" && mkdir -p "$OUT/eval/qrels"
export EMBER_DATA_DIR="$OUT/data" EMBER_JOB_OUTPUT_DIR="$OUT/jobs-out" EMBER_ENCODER=smollm2-bi

"$BIN/python" - "$DATA/beir" "$OUT/eval" <<'PY'
import json, sys
from collections import defaultdict
from pathlib import Path
beir, out = Path(sys.argv[1]), Path(sys.argv[2])
mini = beir / "scifact-mini"
docs = {json.loads(line)["_id"] for line in open(mini / "corpus.jsonl")}
judged = defaultdict(list)
for line in list(open(beir / "scifact" / "qrels" / "train.tsv"))[1:]:
    qid, did, score = line.split()
    judged[qid].append((did, score))
keep = {q for q, rel in judged.items() if all(d in docs for d, _ in rel)}
(out / "corpus.jsonl").write_text((mini / "corpus.jsonl").read_text())
with open(out / "queries.jsonl", "w") as f:
    for line in open(beir / "scifact" / "queries.jsonl"):
        if json.loads(line)["_id"] in keep:
            f.write(line)
with open(out / "qrels" / "train.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q in sorted(keep):
        for d, s in judged[q]:
            f.write(f"{q}\t{d}\t{s}\n")
print(f"evaluation set: {len(keep)} SciFact train queries over scifact-mini's {len(docs)} docs")
PY

time "$BIN/ember" index "$DATA/beir/scifact-mini" -c sci --no-progress
params=$(printf '{"data": ["%s"], "corpus_pairs": ["%s"], "max_steps": 30, "batch_size": 16, "precision": "auto", "save_steps": 10}' \
  "$DATA/train/snli_nli_triples_from_senteval_dev_test.jsonl" "$DATA/beir/scifact-mini")
time "$BIN/ember" jobs retrain sci --trainer supervised --params "$params" \
  --eval-set "$OUT/eval" --split train --task scifact --min-gain 0.005 --json > "$OUT/job.json"
"$BIN/python" - "$OUT/job.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
r = job["result"]
print(f"job {job['id']}: {job['state']}, decision {r['decision']}")
print(f"  {r['metric']}: current {r['scores']['current']:.4f} -> candidate {r['scores']['candidate']:.4f}")
print(f"  reason: {r['reason']}")
for stage, s in r["stages"].items():
    print(f"  {stage:<9} {s['state']}")
print(f"  alias sci -> {job.get('build')}")
PY
