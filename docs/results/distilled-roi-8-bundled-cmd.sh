#!/usr/bin/env bash
# ROI student (issue 23), third try: one halving, teacher DDIM 16 -> student DDIM 8, 1,500 updates, lr 2e-5, EMA 0.999.
# Why: the teacher's DDIM 8 already meets every per-class target and the 4-step students came out grainy; a student
# that starts from the teacher and learns to take two of its DDIM-16 steps at once can only move toward DDIM 16.
cd "$(dirname "$0")/../.."  # the repository root
export OMP_NUM_THREADS=1
exec .venv/bin/lungddpm distill LungDDPMLib/models/lungddpm-roi.pt --steps 8 --teacher-steps 16 --round-steps 1500 \
  --lr 2e-5 --ema-decay 0.999 --checkpoint-every 500 \
  --out runs/distill16/roi-8.pt --run-dir runs/distill16/roi-8.distill \
  --phantom 48 --phantom-size 256 256 160 --phantom-spacing 0.8 0.8 1.5 --phantom-nodules 4 \
  --phantom-nodule-mix solid=0.25,part-solid=0.35,ground-glass=0.4 --seed 1000 --device cpu "$@"
