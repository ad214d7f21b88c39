"""A distilled ROI student against its teacher with DPM-Solver++ 20: whole-process time and per-class fidelity.

Usage:
    python benchmarks/distilled_sampler.py --student STUDENT.pt [--teacher LungDDPMLib/models/lungddpm-roi.pt]
        [--cases 3] [--repeats 2] [--fidelity-cases 12] [--seeds 0 1 2] [--density auto] [--montages DIR]
        [--out distilled.json]
    python benchmarks/distilled_sampler.py --measure-step [--teacher ...] [--updates 5] [--teacher-steps 64]
        [--steps 4] [--round-steps 2000]

The first form runs, side by side and alternating in one run, whole-process ``lungddpm synthesize --mode roi``
(python start-up, model load, the ROI patches, writing the CT) with the student's own default sampler and with the
teacher at ``--sampler dpm++ --steps 20``, on held-out phantom cases (:func:`LungDDPMLib.evaluation.heldout
.heldout_case`, three nodules each), and then the per-class fidelity measures and targets of
``benchmarks/roi_model_fidelity.py`` for both.

``--augment-variants K`` adds the batch measure: whole-process ``lungddpm augment`` over the same cases, K variants
each with three new nodules, student default against teacher DPM-Solver++ 20, alternating; one process pays the
start-up once for all its nodules, as an augmentation run of thousands does.

``--measure-step`` times one distillation update of the teacher (batch 1, one thread, the teacher's own recipe and
data handling, on ROI patches of training phantoms) next to one ordinary training update, and estimates the CPU
time of a whole distillation from ``--teacher-steps`` to ``--steps``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roi_model_fidelity import fidelity_report

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.registry import ROI_FILE
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.sampling.distilled import sampler_for


def _write_cases(folder: Path, n: int, patch_zyx) -> list:
    from LungDDPMLib.evaluation.heldout import heldout_case
    from LungDDPMLib.phantom import save_phantom

    cases = []
    for seed in range(n):
        case = heldout_case(seed, patch_zyx)
        save_phantom(folder, case.phantom, name=f"case{seed}", seg_nrrd=False)
        cases.append((folder / f"case{seed}_ct.nrrd", folder / f"case{seed}_layout.nrrd", len(case.nodules)))
    return cases


def _synthesize(ct: Path, layout: Path, out: Path, checkpoint: str, extra: list, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "LungDDPMLib", "synthesize", "--mode", "roi", "--ct", str(ct), "--layout", str(layout),
           "--out", str(out), "--checkpoint", checkpoint, "--device", "cpu", "--quiet", *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    side = json.loads(out.with_name(out.name.replace(".nrrd", ".lungddpm.json")).read_text())
    return {"wall_s": round(wall, 2), "sampler": side["sampler"], "steps": side["steps"], "levels": side["levels"],
            "timing_s": side["timing_s"]}  # fmt: skip


def _augment(cases: list, out: Path, checkpoint: str, extra: list, variants: int, threads: int) -> dict:
    """Wall time of one ``lungddpm augment`` process over ``cases`` (three new nodules per variant)."""
    ct_dir, lay_dir = out.parent / "aug-ct", out.parent / "aug-layout"
    for ct, layout, _ in cases:  # one folder each, paired by name
        for src, folder in ((ct, ct_dir), (layout, lay_dir)):
            folder.mkdir(exist_ok=True)
            target = folder / ct.name.replace("_ct", "")
            if not target.exists():
                target.symlink_to(src)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "LungDDPMLib", "augment", "--ct-dir", str(ct_dir), "--layout-dir", str(lay_dir),
           "--out", str(out), "--variants", str(variants), "--nodules-per-variant", "3", "--checkpoint", checkpoint,
           "--device", "cpu", "--quiet", *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    nodules = 3 * variants * len(cases)
    return {"wall_s": round(wall, 2), "nodules": nodules, "s_per_nodule": round(wall / nodules, 3)}


def compare(args: argparse.Namespace) -> dict:
    teacher, student = load_checkpoint(args.teacher), load_checkpoint(args.student)
    if student.distillation is None:
        raise SystemExit(f"{args.student} is not a distilled checkpoint (lungddpm info shows 'distilled': null)")
    from LungDDPMLib.data.axes import native_grid

    patch = tuple(native_grid(teacher.config.grid, teacher.config.array_order))
    runs = {
        "student-default": (args.student, []),
        "teacher-dpm++20": (args.teacher, ["--sampler", "dpm++", "--steps", "20"]),
    }
    timing = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        cases = _write_cases(Path(tmp), args.cases, patch)
        for r in range(args.repeats):
            for i, (ct, layout, nodules) in enumerate(cases):
                for name, (path, extra) in runs.items():  # alternating: both see the same machine load
                    out = Path(tmp) / f"{name}-{i}-{r}.nrrd"
                    row = _synthesize(ct, layout, out, path, extra, args.threads)
                    row.update(case=i, repeat=r, nodules=nodules)
                    timing[name].append(row)
                    print(json.dumps({name: row}), flush=True)
        augment = {name: [] for name in runs}
        for r in range(args.repeats if args.augment_variants else 0):
            for name, (path, extra) in runs.items():
                row = _augment(cases, Path(tmp) / f"aug-{name}-{r}", path, extra, args.augment_variants, args.threads)
                augment[name].append(row)
                print(json.dumps({f"augment {name}": row}), flush=True)
    summary = {}
    for name, rows in timing.items():
        summary[name] = {
            "wall_s_median": statistics.median(r["wall_s"] for r in rows),
            "sampling_s_per_nodule_median": statistics.median(
                r["timing_s"].get("sampling", r["timing_s"]["case"]) / r["nodules"] for r in rows
            ),
            "sampler": rows[0]["sampler"],
            "steps": rows[0]["steps"],
        }
    ratio = summary["teacher-dpm++20"]["wall_s_median"] / summary["student-default"]["wall_s_median"]
    report = {"command": " ".join(sys.argv), "threads": args.threads, "timing": timing, "summary": summary,
              "whole_process_speedup": round(ratio, 2)}  # fmt: skip
    if args.augment_variants:
        walls = {n: statistics.median(r["wall_s"] for r in rows) for n, rows in augment.items()}
        report["augment"] = {
            "variants_per_case": args.augment_variants,
            "runs": augment,
            "wall_s_median": walls,
            "whole_process_speedup": round(walls["teacher-dpm++20"] / walls["student-default"], 2),
        }
    if args.fidelity_cases:
        own, _ = sampler_for(student.distillation)
        fid = fidelity_report({"student-default": args.student, "teacher-dpm++20": args.teacher},
                              {"student-default": own, "teacher-dpm++20": SamplerConfig("dpm++", steps=20)},
                              range(args.fidelity_cases), args.seeds, args.montages,
                              {"student-default": args.density, "teacher-dpm++20": args.density})  # fmt: skip
        report["fidelity"] = {n: {k: s[k] for k in ("sampler", "density", "looks", "targets", "classes",
                                                    "seam_score_median", "kept_max_abs_diff_hu")}
                              for n, s in fid["summary"].items()}  # fmt: skip
    return report


def measure_step(args: argparse.Namespace) -> dict:
    """Seconds per distillation update and per training update of the teacher, batch 1, on ``--threads``."""
    from LungDDPMLib.commands.distill import INHERITED
    from LungDDPMLib.data.datasets import PhantomDataset, model_data_options
    from LungDDPMLib.distillation import DistillConfig, RoundTrainer
    from LungDDPMLib.training import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    teacher = load_checkpoint(args.teacher)
    recipe = teacher.provenance.get("train_config", {})
    fields = {k: (tuple(recipe[k]) if k == "betas" else recipe[k]) for k in INHERITED if k in recipe}
    fields.update(batch_size=1, grad_accum=1, max_steps=10**6, checkpoint_every=10**6, log_every=10**6)
    train = TrainConfig(**fields)
    dataset = PhantomDataset(2, base_seed=1000, **model_data_options(teacher.config), seed=0)
    recipe_d = DistillConfig(steps=args.steps, teacher_steps=args.teacher_steps, round_steps=args.round_steps)
    out = {"threads": args.threads, "teacher": args.teacher, "train_config": train.to_dict()}
    with tempfile.TemporaryDirectory() as tmp:
        makers = {
            "distill_update_s": lambda: RoundTrainer(teacher.model, dataset, train, Path(tmp) / "d",
                                                     teacher_steps=args.teacher_steps, distill=recipe_d, device="cpu"),
            "train_update_s": lambda: Trainer(teacher.model, dataset, train, Path(tmp) / "t", device="cpu"),
        }  # fmt: skip
        for key, make in makers.items():
            trainer = make()
            batches = trainer._loader()
            trainer._train_step(batches)  # warm-up (first-call allocations)
            times, cpu = [], []
            for _ in range(args.updates):
                start, start_cpu = time.perf_counter(), time.process_time()
                trainer._train_step(batches)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            # CPU time is what the estimate needs: on a shared machine the wall time also counts the others' work.
            out[key] = round(statistics.median(cpu), 3)
            out[key.replace("_s", "_cpu_all_s")] = [round(t, 3) for t in cpu]
            out[key.replace("_s", "_wall_all_s")] = [round(t, 3) for t in times]
    updates = recipe_d.rounds * recipe_d.round_steps
    out.update(rounds=recipe_d.rounds, round_steps=recipe_d.round_steps, total_updates=updates)
    out["estimated_total_cpu_h"] = round(updates * out["distill_update_s"] / 3600, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=str(ROI_FILE))
    ap.add_argument("--student")
    ap.add_argument("--cases", type=int, default=3, help="timed held-out cases (three nodules each)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--augment-variants", type=int, default=0, help="batch measure: augment K variants per case")
    ap.add_argument("--fidelity-cases", type=int, default=12, help="0: timing only")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--density", default="auto", help="density control of both in the fidelity part (synthesize's "
                    "default, auto)")  # fmt: skip
    ap.add_argument("--montages", default=None, help="folder for the fidelity montages (one PNG per model and class)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--measure-step", action="store_true")
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--teacher-steps", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--round-steps", type=int, default=2000)
    ap.add_argument("--out")
    args = ap.parse_args()
    if not args.measure_step and not args.student:
        ap.error("give --student (or --measure-step)")
    report = measure_step(args) if args.measure_step else compare(args)
    print(json.dumps({k: v for k, v in report.items() if k not in ("timing",)}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
