#!/usr/bin/env bash
# The downstream experiment of docs/evaluation.md: scarce real data (4 phantoms), synthetic nodules from the bundled
# ROI model, MONAI U-Net, three training seeds; then the ablations. Synthetic cases are cached in $OUT/cache and
# shared by the runs that use the same model and settings. Usage: bash benchmarks/downstream_runs.sh [OUT]
# (about 75 min on a 2-core CPU). To repeat the step-1600 rows, add --checkpoint with that model (see the doc).
set -euo pipefail
OUT=${1:-runs/downstream}
mkdir -p "$OUT"
run() { name=$1; shift; lungddpm downstream --out "$OUT/$name" --cache "$OUT/cache" --threads 2 "$@" 2> "$OUT/$name.log"; }
run main --multiples 0 1 2 4                 # real only, +1x, +2x, +4x synthetic (ROI model, classes given)
run types-off --multiples 2 --types off      # ablation: the model is not told the classes
run full --multiples 2 --mode full           # ablation: the whole-lung demo model instead of the ROI model
run long --multiples 0 1 2 --steps 1200      # a three times longer segmentation training
run own-net --multiples 0 2 --segnet own     # the same question with our small U-Net
python benchmarks/downstream_compare.py "$OUT/main/downstream.json" "types-off=$OUT/types-off/downstream.json" \
  "full=$OUT/full/downstream.json" --out "$OUT/combined.json" | tee "$OUT/combined.txt"
python benchmarks/downstream_compare.py "$OUT/long/downstream.json" --out "$OUT/long-combined.json" \
  | tee "$OUT/long-combined.txt"
