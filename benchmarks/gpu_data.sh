#!/usr/bin/env bash
# Copy the CIFAR-10 data benchmarks/gpu.sh reads into .gpu/cifar10/ (git-ignored): the first 20,000 rows of
# the training set and the whole 10,000-row test set, image + label columns only (~28.5 MB: with the Ray
# bundle .gpu/site.txz, ~32 MB, it stays under the 64 MiB a device run may carry). Run once, from anywhere:
#   bash benchmarks/gpu_data.sh [SOURCE_DIR] [TRAIN_ROWS]     # defaults: ../shared/data/cifar10 20000
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=${1:-../shared/data/cifar10}
rows=${2:-20000}
python=python3; [ -x .venv/bin/python ] && python=.venv/bin/python
mkdir -p .gpu/cifar10
"$python" - "$source_dir" "$rows" <<'PY'
import sys
from pathlib import Path

import pyarrow.parquet as pq

source, rows = Path(sys.argv[1]), int(sys.argv[2])
for name, keep in (("train", rows), ("test", None)):
    table = pq.read_table(source / f"{name}.parquet", columns=["image", "label"])
    if keep is not None and keep > table.num_rows:
        raise SystemExit(f"gpu_data.sh: {source}/{name}.parquet has {table.num_rows} rows, fewer than {keep}")
    table = table.slice(0, keep)
    out = Path(".gpu/cifar10") / f"{name}.parquet"
    pq.write_table(table, out, compression="none")  # JPEG bytes: nothing left to compress
    print(f"{out}: {table.num_rows} rows, {out.stat().st_size / 2**20:.1f} MiB")
PY
