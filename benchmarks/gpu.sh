#!/usr/bin/env bash
# The GPU benchmarks, one prepared script of at most 5 minutes on one GPU; it installs nothing. Each part has
# its own time limit, writes its section of the results file as soon as it has a row, and a part that fails
# or runs out of time does not stop the next:
#   resnet50  benchmarks/gpu_resnet50.py: ResNet-50 bf16 224x224 synthetic, batch 128; raykit (1 Ray Train
#             worker, train.compile=default, and off if time allows) vs plain PyTorch (NCHW eager,
#             channels-last eager, channels-last + torch.compile): images/s and peak GPU memory
#   cifar     benchmarks/gpu_cifar.py: CIFAR-10 ResNet-18, wall from the command to the accuracy the plain
#             baseline (benchmarks/baselines/cifar_torch.py) reaches in its epochs, raykit vs plain
#   digits    benchmarks/gpu_cifar.py: the default digits job with scaling.use_gpu=true, wall vs training seconds
#
# Python: the Ray bundle .gpu/site.txz when there is no .venv (the device machine: python3 with torch, no Ray;
# the bundle is unpacked once to /tmp/site), else the checkout's .venv (a developer's GPU box). Data:
# .gpu/cifar10/{train,test}.parquet. Prepare both here, once (together ~59 MiB, under a run's 64 MiB):
#   bash ../shared/tools/gpu-bundle.sh    # .gpu/site.txz, ~32 MB, ~2 min
#   bash benchmarks/gpu_data.sh           # .gpu/cifar10/: 20,000 training + 10,000 test images, ~27 MiB
# Then, through the device tool, from the checkout's root, with carry [".gpu"]:
#   bash benchmarks/gpu.sh --out "$OUT"
# $OUT receives RESULTS-gpu.md (the GPU sections), one JSON file of measurements and one log per part; back
# here, `bash benchmarks/gpu.sh --merge DIR/RESULTS-gpu.md` copies those sections into benchmarks/RESULTS.md
# (or into --results FILE).
#
#   bash benchmarks/gpu.sh [--out DIR] [--results FILE] [--only "resnet50 cifar digits"] [--device cpu]
# --device cpu runs every part at tiny size on the CPU (fp32): a check of the script, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
out="" results="" only="resnet50 cifar digits" device=cuda merge=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --merge) merge=$2; shift 2 ;;
        *) echo "gpu.sh: unknown argument $1 (see the header of benchmarks/gpu.sh)" >&2; exit 2 ;;
    esac
done

if [ -x .venv/bin/python ]; then
    python=.venv/bin/python
elif [ -f .gpu/site.txz ]; then
    if [ ! -f /tmp/site/ray/__init__.py ]; then  # a warm machine keeps /tmp/site from an earlier call
        started=$(date +%s)
        mkdir -p /tmp/site && tar xJf .gpu/site.txz -C /tmp/site || { echo "gpu.sh: unpacking the bundle failed" >&2; exit 2; }
        echo "gpu.sh: unpacked .gpu/site.txz to /tmp/site in $(( $(date +%s) - started )) s"
    fi
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
    python=python3
else
    echo "gpu.sh: no .venv and no Ray bundle .gpu/site.txz (bash ../shared/tools/gpu-bundle.sh builds it)" >&2
    exit 2
fi

if [ -n "$merge" ]; then  # back on the developer's machine: the device run's sections into benchmarks/RESULTS.md
    exec "$python" - "$merge" "${results:-benchmarks/RESULTS.md}" <<'PY'
import re, sys
from pathlib import Path
from benchmarks.common import write_section
for block in re.split(r"\n(?=## )", Path(sys.argv[1]).read_text()):
    if block.startswith("## GPU"):
        write_section(block.splitlines()[0], block.rstrip("\n") + "\n", Path(sys.argv[2]))
        print(f"{sys.argv[2]}: {block.splitlines()[0]}")
PY
fi

if [ -n "$out" ]; then mkdir -p "$out"; results=${results:-$out/RESULTS-gpu.md}; fi
results=${results:-benchmarks/RESULTS.md}
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
        echo "gpu.sh: no NVIDIA GPU visible (nvidia-smi failed)" >&2; exit 2; }
    resnet50_args=() cifar_args=() digits_args=()
else  # tiny sizes: the script's check on a machine without a GPU
    resnet50_args=(--precision fp32 --images 32 --val-images 8 --size 32 --batch 16 --classes 4 --epochs 1
                   --plain nchw channels_last --raykit-compile off)
    cifar_args=(--precision fp32 --data tests/data/cifar10_slice --train-rows 64 --test-rows 64 --epochs 1
                --batch-size 32)
    digits_args=(--digits-epochs 1)
fi

failed=0
part() {  # part NAME SECONDS COMMAND...: one part under its own time limit, its output also in $out/NAME.log
    local name=$1 limit=$2 started rc; shift 2
    case " $only " in *" $name "*) ;; *) return 0 ;; esac
    started=$(date +%s)
    echo "gpu.sh: $name (at most $limit s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | if [ -n "$out" ]; then tee "$out/$name.log"; else cat; fi
    rc=${PIPESTATUS[0]}
    echo "gpu.sh: $name finished in $(( $(date +%s) - started )) s with exit status $rc"
    if [ "$rc" -ne 0 ]; then
        failed=1
        # A part killed at its limit can leave its local Ray behind, holding the GPU: stop it on the device
        # machine (the bundle's Ray), never on a developer's box, where other Ray work may be running.
        if [ "$rc" -ge 124 ] && [ "$python" = python3 ]; then "$python" -m ray.scripts.scripts stop --force || true; fi
    fi
}
json() { if [ -n "$out" ]; then echo --json "$out/$1.json"; fi; }

# Limits 160 + 85 + 45 = 290 s, plus unpacking the bundle (a few seconds): at most 5 minutes. To spend more,
# split it into two device calls, e.g. --only resnet50, then --only "cifar digits".
part resnet50 160 "$python" benchmarks/gpu_resnet50.py --device "$device" --budget-s 145 --results "$results" \
    $(json resnet50) "${resnet50_args[@]}"
part cifar 85 "$python" benchmarks/gpu_cifar.py --parts cifar --device "$device" --epochs 10 --results "$results" \
    $(json gpu) "${cifar_args[@]}"
part digits 45 "$python" benchmarks/gpu_cifar.py --parts digits --device "$device" --results "$results" \
    $(json gpu) "${digits_args[@]}"
exit $failed
