#!/bin/bash
# Adapter training on SmolLM2-135M-Instruct (CPU) and its evaluation: the commands behind the
# "Adapter training" section of bench/RESULTS.md. Encoders and logs go to bench/out/train/.
#
#   bench/train_smollm2.sh            # every stage, then the evaluations
#   STAGES="llara" bench/train_smollm2.sh
#
# Every stage resumes from its last checkpoint when re-run. On a busy shared CPU one torch
# thread is much faster than two (OpenMP threads spin against other processes), hence
# --threads 1 / OMP_NUM_THREADS=1 for the first chain (session 2).
#
# The shipped encoder (preset smollm2-ember, issue 13) is the "ember" chain, then one adapter:
#   STAGES="ember-mntp" THREADS=2 bench/train_smollm2.sh   # 300 steps, 21.6 min (Xeon, AMX)
#   STAGES="ember-sup" THREADS=1 bench/train_smollm2.sh    # 48 steps, 62 min (1 thread: the
#                                                          # machine was shared; see RESULTS.md)
#   python bench/ship_adapter.py bench/out/train/e-sup --out encoders/presets/smollm2-ember \
#     --rank 16 --name smollm2-ember          # the preset of sessions 5-9 (git c829d3b)
#   STAGES="ember-distill ember-ship" THREADS=2 bench/train_smollm2.sh  # session 10: + MiniLM
#                                    # distillation, 120 steps x 32, 45 min of steps (AMD EPYC,
#                                    # avx512_bf16), then fit-stats and the fold: session 10's preset
#   STAGES="ember-distill2 ember-ship2" THREADS=2 bench/train_smollm2.sh  # written in session 11,
#                                    # run in 13: from session 10's preset, 150 more steps on up
#                                    # to 6,000 examples a source, seed 43: session 13's preset
#   STAGES="ember-distill3 ember-ship3" THREADS=2 bench/train_smollm2.sh  # session 14: from
#                                    # session 13's preset (7ebec54), 280 more steps, up to 8,000
#                                    # examples a source, seed 44: the shipped preset (62 step
#                                    # minutes, AMD EPYC avx512_bf16; bench/RESULTS.md)
#   STAGES="ablate-none ablate-no-teacher ablate-sts-once ablate-one-negative" THREADS=2 \
#     bench/train_smollm2.sh   # session 17: ember-distill again, then with one lever off each;
#     # session 19 ran ablate-no-teacher (fp32 Xeon without bf16: SHIP_DTYPE=float32, 83 step min),
#     # session 20 ablate-none (same machine, 68 step min), session 21 ablate-sts-once (AMD EPYC
#     # avx512_bf16 like session 10, so bf16; THREADS=1 to step 20, then 2). One ablation at a
#     # time: two at once need more than 23 GB (one-negative was OOM-killed). RESULTS.md ablations
#   STAGES="ablate-no-snli ablate-no-qrels ablate-no-pairs ablate-no-sts" THREADS=2 \
#     bench/train_smollm2.sh   # session 22: ember-distill with one of its four sources left out
#     # (session 23 ran ablate-no-pairs: 62 step minutes, EPYC bf16; the other three not run yet)
# bf16 autocast (--precision auto: bf16 where the CPU has avx512_bf16 / AMX, fp32 elsewhere).
# Data: MNTP on the SciFact corpus text (unlabelled, in-domain); the supervised stage mixes
# SNLI triples, SciFact *train* qrels (twice, BM25 hard negatives), (title, abstract) pairs of
# the SciFact corpus (self-supervised) and STS-B *train* (CoSENT). No test split is read.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
E=".venv/bin/ember"
O=bench/out/train
DATA=../shared/data
STAGES=${STAGES:-"mntp simcse supervised latent_attention multi_layer llara eval"}
THREADS=${THREADS:-1}
mkdir -p $O
train() { nice -n 10 $E train "$@" --threads "$THREADS" --resume --no-progress; }
SCIFACT=$DATA/beir/scifact
STS_TRAIN=$DATA/sts/STSBenchmark/stsbenchmark/sts-train.csv
# The distillation stages' mix: SNLI, SciFact train x2 (2 BM25 negatives), (title, abstract)
# pairs, STS-B train x2; MiniLM the teacher; bf16 autocast where the CPU has it. mix() is what
# every distillation and ablation stage shares; distill() adds the three levers of the recipe.
# The four sources; $SOURCES (word-split: the paths hold no spaces) is all of them unless a
# leave-one-out ablation names fewer.
SNLI="--data $DATA/train/snli_nli_triples_from_senteval_dev_test.jsonl"
QRELS="--data $SCIFACT --data $SCIFACT"
PAIRS="--corpus-pairs $SCIFACT"
STS="--scored-pairs $STS_TRAIN"
mix() { train supervised ${SOURCES:-$SNLI $QRELS $PAIRS $STS} --batch-size 32 --chunk-size 32 \
  --max-length 128 --query-max-length 64 --lr 1e-4 --precision auto "$@"; }
# The three levers distill() adds: the teacher, STS-B a second time, 2 BM25 negatives.
LEVERS="--teacher minilm $STS --hard-negatives 2"
distill() { mix $LEVERS "$@"; }
# An ablation of ember-distill (session 10's run: from the c829d3b preset, 120 x 32, first 2,000
# of each source, seed 42) with exactly one lever changed ("$@" = mix's arguments for it), then
# shipped like the preset (fit-stats, fold) into $O/abl-$1-shipped for bench/quality.py.
ablate() { local name=$1; shift; preset_at c829d3b $O/prev-preset
  mix --from $O/prev-preset --out $O/abl-$name --max-examples 2000 --max-steps 120 \
    --save-steps 20 "$@"
  SHIP_OUT=$O/abl-$name-shipped ship $O/abl-$name; }
# The preset folder as committed at $1, unpacked into $2 (a distillation stage's starting point).
preset_at() { rm -rf "$2" && mkdir -p "$2"
  git archive "$1" encoders/presets/smollm2-ember | tar -x --strip-components=3 -C "$2"; }
# Fit standardisation on 1,000 SciFact documents (bf16; SHIP_DTYPE=float32 on CPUs without
# avx512_bf16 / AMX, where bf16 is several times slower), then fold $1 into one rank-16 fp16
# adapter: the preset folder, or $SHIP_OUT.
ship() { EMBER_DTYPE=${SHIP_DTYPE:-bfloat16} nice -n 10 $E fit-stats "$1" $SCIFACT --out "$1-std" --no-progress
  .venv/bin/python bench/ship_adapter.py "$1" --out "${SHIP_OUT:-encoders/presets/smollm2-ember}" \
    --rank 16 --name smollm2-ember --stats "$1-std"; }

for stage in $STAGES; do
  case $stage in
    mntp) train mntp --from smollm2-bi --out $O/mntp --max-steps 200 --batch-size 4 \
            --max-length 128 --lr 1e-4 --save-steps 25 ;;
    simcse) train simcse --from $O/mntp --out $O/simcse --max-steps 100 --batch-size 16 \
              --max-length 32 --lr 5e-5 --dropout 0.1 --save-steps 10 ;;
    supervised) train supervised --from $O/simcse --out $O/supervised --max-steps 150 \
                  --batch-size 8 --max-length 128 --query-max-length 64 --hard-negatives 1 \
                  --chunk-size 0 --max-examples 1000 --lr 1e-4 --save-steps 10 ;;
    latent_attention|multi_layer)  # the supervised stage again (same data, budget, seed) + a pooler
      train supervised --from $O/simcse --out $O/sup-$stage --pooler $stage --max-steps 150 \
        --batch-size 8 --max-length 128 --query-max-length 64 --hard-negatives 1 \
        --chunk-size 0 --max-examples 1000 --lr 1e-4 --save-steps 10 ;;
    llara) train llara --from smollm2 --out $O/llara --max-steps 200 --batch-size 8 \
             --max-length 96 --lr 1e-4 --save-steps 25 ;;
    eval)  # scifact-mini + STS-B + Echo rows of bench/RESULTS.md (rows: bench/quality_rows.json)
      nice -n 10 .venv/bin/python bench/quality.py --mini --no-progress --rows "LLM2Vec" \
        --rows "LLaRA" --rows "pooler" ;;
    ember-mntp) train mntp --from smollm2-bi --out $O/e-mntp --data $SCIFACT/corpus.jsonl \
                  --max-steps 300 --batch-size 8 --max-length 128 --lr 1e-4 --save-steps 25 \
                  --precision auto ;;
    ember-sup) train supervised --from $O/e-mntp --out $O/e-sup \
                 --data $DATA/train/snli_nli_triples_from_senteval_dev_test.jsonl \
                 --data $SCIFACT --data $SCIFACT --corpus-pairs $SCIFACT \
                 --scored-pairs $DATA/sts/STSBenchmark/stsbenchmark/sts-train.csv \
                 --max-steps 48 --batch-size 64 --chunk-size 32 --max-length 160 \
                 --query-max-length 64 --hard-negatives 1 --lr 2e-4 --save-steps 8 \
                 --precision auto ;;
    # Distillation from the bundled all-MiniLM-L6-v2 (session 10) on top of the preset shipped in
    # sessions 5-9 (ember-mntp + ember-sup folded by ship_adapter.py; taken from git as it was),
    # the same sources, STS-B train twice, 2 BM25 negatives as soft labels. Then ember-ship.
    ember-distill) preset_at c829d3b $O/prev-preset
                   distill --from $O/prev-preset --out $O/e-distill --max-examples 2000 \
                     --max-steps 120 --save-steps 20 ;;
    ember-distill2) preset_at ffbf288 $O/prev-preset2  # session 11: 150 more steps
                    distill --from $O/prev-preset2 --out $O/e-distill2 --max-examples 6000 \
                      --max-steps 150 --seed 43 --save-steps 10 ;;
    ember-distill3) preset_at 7ebec54 $O/prev-preset3  # session 14: 280 more steps
                    distill --from $O/prev-preset3 --out $O/e-distill3 --max-examples 8000 \
                      --max-steps 280 --seed 44 --save-steps 10 ;;
    # One lever off at a time against ember-distill (bench/RESULTS.md, "Ablations"); ablate-none
    # is ember-distill itself again, on this machine, into the ablation folders (the reference):
    ablate-none) ablate none $LEVERS ;;
    ablate-no-teacher) ablate no-teacher $STS --hard-negatives 2 ;;
    ablate-sts-once) ablate sts-once --teacher minilm --hard-negatives 2 ;;
    ablate-one-negative) ablate one-negative --teacher minilm $STS --hard-negatives 1 ;;
    # Leave one source out, the rest of ember-distill unchanged (only no-pairs run yet). Without
    # STS-B neither copy of it is read; without the SciFact qrels only SNLI has a negative to
    # pick.
    ablate-no-snli) SOURCES="$QRELS $PAIRS $STS" ablate no-snli $LEVERS ;;
    ablate-no-qrels) SOURCES="$SNLI $PAIRS $STS" ablate no-qrels $LEVERS ;;
    ablate-no-pairs) SOURCES="$SNLI $QRELS $STS" ablate no-pairs $LEVERS ;;
    ablate-no-sts) SOURCES="$SNLI $QRELS $PAIRS" ablate no-sts --teacher minilm \
                     --hard-negatives 2 ;;
    ember-ship) ship $O/e-distill ;;
    ember-ship2) ship $O/e-distill2 ;;
    ember-ship3) ship $O/e-distill3 ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
