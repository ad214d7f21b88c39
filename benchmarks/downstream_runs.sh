#!/usr/bin/env bash
# The downstream experiment of docs/evaluation.md: scarce real data (4 phantoms), synthetic nodules from the bundled
# ROI model, MONAI U-Net, three training seeds; then the ablations. Synthetic cases are cached in $OUT/cache and
# shared by the runs that use the same model and settings. Usage: bash benchmarks/downstream_runs.sh [OUT]
set -euo pipefail
OUT=${1:-runs/downstream}
mkdir -p "$OUT"
run() { name=$1; shift; lungddpm downstream --out "$OUT/$name" --cache "$OUT/cache" --threads 2 "$@" 2> "$OUT/$name.log"; }
run main --multiples 0 2 4                   # real only, +2x, +4x synthetic (ROI model, classes given)
run types-off --multiples 2 --types off      # ablation: the model is not told the classes
run full --multiples 2 --mode full           # ablation: the whole-lung demo model instead of the ROI model
run own-net --multiples 0 2 --segnet own     # the same question with our small U-Net
run one-x --multiples 1                      # the amount of synthetic data: +1x
python benchmarks/downstream_compare.py "$OUT/main/downstream.json" "one-x=$OUT/one-x/downstream.json" \
  "types-off=$OUT/types-off/downstream.json" "full=$OUT/full/downstream.json" --out "$OUT/combined.json" \
  | tee "$OUT/combined.txt"
