#!/usr/bin/env bash
# The GPU checks of ltkd-bench in one script (a few minutes on one H100/H200):
#  1. the CUDA-only tests (bf16 autocast, channels_last, device-resident data),
#  2. the speed comparison for the literature pair resnet32x4 -> resnet8x4 at CIFAR-100 shape, batch 64:
#     (a) ltkd-bench, (b) the usual eager DataLoader pipeline, (c) the compute bound, in one process,
#     with and without torch.compile,
#  3. the extrapolated wall time of the full reference protocol (240 epochs x 10,847 CIFAR-100-LT images),
#  4. the cell path: every method of the quick pair and of resnet32x4 -> resnet8x4 trained in lockstep
#     (one teacher forward per batch) vs one at a time (`speed --grid`),
#  5. one real suite end to end on CUDA: the quick suite on Fashion-MNIST-LT (the four IDX .gz files must be
#     in data/fashion-mnist/, an ignored folder carried to the GPU machine, or in Debian's location).
# Usage: bash scripts/gpu_check.sh [OUT_DIR]   (writes speed_*.json, the quick suite's results and a log there)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
python -m pytest -q tests/test_speed.py tests/test_data_path.py 2>&1 | tail -3
python -m benchmark speed --teacher cifar_resnet32x4 --student cifar_resnet8x4 --image-size 32 --in-chans 3 \
    --num-classes 100 --batch-size 64 --steps 300 --device cuda --json "$out/speed_eager_step.json"
python -m benchmark speed --teacher cifar_resnet32x4 --student cifar_resnet8x4 --image-size 32 --in-chans 3 \
    --num-classes 100 --batch-size 64 --steps 300 --device cuda --compile --json "$out/speed_compiled.json"
python - "$out" <<'PY'
import json, sys
for name in ("speed_eager_step", "speed_compiled"):
    r = json.load(open(f"{sys.argv[1]}/{name}.json"))
    steps = 240 * (10847 // 64)
    print(f"{name}: a={r['a_ltkd_ips']:.0f} b={r['b_eager_ips']:.0f} c={r['c_compute_ips']:.0f} img/s, "
          f"a/b={r['a_over_b']:.2f}, a/c={r['a_over_c']:.2f}; 240 epochs x 10,847 images extrapolated: "
          f"{steps * 64 / r['a_ltkd_ips']:.0f} s of training (+ evaluation), labelled an extrapolation")
PY
python -m benchmark speed --grid --device cuda --steps 20 --json "$out/speed_cells.json"
root=()
[ -f data/fashion-mnist/train-images-idx3-ubyte.gz ] && root=(--root data/fashion-mnist)
time python -m benchmark run --suite quick --device cuda --no-progress ${root[@]+"${root[@]}"} --out "$out/quick_cuda" \
    2>&1 | tail -60
