#!/usr/bin/env bash
# Build the reference venv (.venv-ref) with llm2vec 0.2.3 and its pins, for bench/parity_llm2vec.py
# and bench/encode_throughput.py. Idempotent: a stamp file records a finished build.
#
#   bash bench/ref_env.sh [VENV_DIR]      (default: <repo>/.venv-ref)
#
# llm2vec 0.2.3 declares torch, transformers>=4.43.1,<=4.44.2, peft, numpy, tqdm, datasets,
# evaluate and scikit-learn. The last three are only used by its training scripts (the `llm2vec`
# package itself imports none of them), so it is installed with --no-deps and then exactly what
# it imports, pinned: transformers 4.44.2, peft 0.13.2. torch goes first as the CPU wheel
# (torch==2.13.0): a bare `torch` requirement would pull the CUDA build.
# sentence-transformers 3.0.1 (the last release for transformers 4.44's era) is the MiniLM
# reference; it is installed with --no-deps plus its light imports for the same reason.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="${1:-$repo/.venv-ref}"
stamp="$venv/.ref-installed-v1"
py="${PYTHON:-python3}"

if [[ -f "$stamp" ]]; then
  echo "reference venv ready: $venv"
  exit 0
fi

pip_install() { "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"; }

"$py" -m venv "$venv"
pip_install torch==2.13.0
pip_install "transformers==4.44.2" "peft==0.13.2" "numpy<2.3" tqdm
pip_install --no-deps "llm2vec==0.2.3"
pip_install --no-deps "sentence-transformers==3.0.1"
pip_install scikit-learn scipy pillow
"$venv/bin/python" - <<'PY'
import llm2vec, peft, sentence_transformers, torch, transformers
assert transformers.__version__ == "4.44.2", transformers.__version__
assert peft.__version__ == "0.13.2", peft.__version__
assert torch.__version__.startswith("2.13.0"), torch.__version__
print("llm2vec", "0.2.3", "transformers", transformers.__version__, "peft", peft.__version__,
      "torch", torch.__version__, "sentence-transformers", sentence_transformers.__version__)
PY
touch "$stamp"
echo "reference venv ready: $venv"
