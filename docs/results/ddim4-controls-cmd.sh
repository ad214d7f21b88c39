#!/usr/bin/env bash
# The controls a 4-step student must beat (2026-12-07): plain DDIM 4 (trailing spacing) of the original ROI teacher
# and of the bundled 8-step student, on the same 12 held-out cases and 3 seeds as the fidelity part of
# benchmarks/distilled_sampler.py. About 6 min each on one thread.
cd "$(dirname "$0")/../.."  # the repository root
export OMP_NUM_THREADS=1
mkdir -p runs/ddim4-controls
.venv/bin/python benchmarks/teacher_ddim_steps.py --steps 4 --cases 12 --seeds 0 1 2 --density auto \
  --out runs/ddim4-controls/teacher-ddim4-12cases.json
.venv/bin/python benchmarks/teacher_ddim_steps.py --checkpoint LungDDPMLib/models/lungddpm-roi-fast.pt --steps 4 \
  --cases 12 --seeds 0 1 2 --density auto --out runs/ddim4-controls/student8-ddim4-12cases.json
