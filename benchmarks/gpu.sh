#!/usr/bin/env bash
# The GPU benchmark, one prepared script (under 8 minutes on one GPU): ResNet-50 on synthetic 224x224
# images through raykit (1 worker, bf16) and through a plain PyTorch loop; prints images/s and peak GPU
# memory for both and writes the "GPU" section of benchmarks/RESULTS.md.
#   bash benchmarks/gpu.sh                 # on a machine with a CUDA GPU, from the checkout's root
#   bash benchmarks/gpu.sh --images 2048   # extra arguments go to benchmarks/gpu_resnet50.py
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then make install; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
    echo "gpu.sh: no NVIDIA GPU visible (nvidia-smi failed)" >&2; exit 2; }
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'"
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.25
timeout 450 .venv/bin/python benchmarks/gpu_resnet50.py "$@"
