#!/usr/bin/env bash
# The whole GPU check in one call (issue 7): CUDA tests, every assignment's fixtures on CPU and CUDA, and the
# batch benchmark on CUDA. Needs torch with CUDA, pytest and pyyaml; nbformat and IPython are
# optional (the loader reads notebooks without them). Run from anywhere:
#     bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - <<'PY'
import torch, platform
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
PY
echo "== CUDA tests"
start=$(date +%s)
python -m pytest -q -m cuda -p no:cacheprovider -s tests/test_gpu.py tests/test_reference.py \
    tests/test_reference_normalization.py 2>&1 | grep -v "^$" | tail -30
echo "   ($(( $(date +%s) - start )) s)"
echo "== fixtures on CPU and CUDA"
start=$(date +%s)
python scripts/gpu_table.py
echo "   ($(( $(date +%s) - start )) s)"
echo "== batch on CUDA"
python scripts/bench_batch.py --count "${BENCH_COUNT:-60}" --jobs "${BENCH_JOBS:-4}" --device cuda
