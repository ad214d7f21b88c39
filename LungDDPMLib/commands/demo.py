"""``lungddpm demo``: the embedded default - a phantom CT with nodules through the whole pipeline.

Writes the real CT, the layout and the synthetic CT (NRRD), a preview PNG (real | layout | synthetic, axial and
coronal through a nodule) and ``summary.json`` (timing, seed, model, sampler, layout fidelity). It uses, in
order: ``--checkpoint``, the bundled demo model, or - when neither exists - a tiny model trained on phantoms for
a few hundred steps on the spot, which shows the pipeline working but not realistic synthesis (the summary says
which was used).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..registry import DEMO_FILE as BUNDLED


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a phantom (the embedded default)")
    p.add_argument("--out", default="lungddpm-demo", help="output folder (default: ./lungddpm-demo)")
    p.add_argument("--checkpoint", help="model to use instead of the bundled demo model")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and of the sample")
    p.add_argument("--sampler", choices=("dpm++", "ddim", "ddpm"), default="dpm++")
    p.add_argument("--steps", type=int, default=None, help="network evaluations (default: the sampler's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--phantom-size", type=int, nargs=3, default=(256, 256, 160), metavar=("X", "Y", "Z"))
    p.add_argument("--phantom-spacing", type=float, nargs=3, default=(0.8, 0.8, 1.5), metavar=("X", "Y", "Z"))
    p.add_argument(
        "--quick-train-steps",
        type=int,
        default=400,
        help="steps of the stand-in tiny model when no checkpoint and no bundled model exist",
    )
    p.set_defaults(func=run)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quick_model(work: Path, steps: int, seed: int, device: str) -> Any:
    """Train the tiny preset on phantoms (32^3, lung crop) so that the demo can run without weights."""
    from ..config import preset
    from ..data.datasets import PhantomDataset, model_data_options
    from ..training import TrainConfig, Trainer, seeded_model

    cfg = preset("tiny", crop="lung")
    data = PhantomDataset(8, base_seed=1000 + seed, seed=seed, **model_data_options(cfg))
    config = TrainConfig(
        lr=3e-3,
        grad_accum=1,
        max_steps=steps,
        ema_decay=0.98,
        ema_every=1,
        ema_start=steps // 2,
        checkpoint_every=steps,
        log_every=max(steps // 10, 1),
        seed=seed,
    )
    trainer = Trainer(seeded_model(cfg, seed), data, config, work / "quick-model", device=device)
    last = [0.0]

    def progress(step: int, total: int, loss: float, eta_s: Optional[float]) -> None:
        if time.monotonic() - last[0] > 5 or step == total:
            last[0] = time.monotonic()
            _log(f"  training step {step}/{total}  loss {loss:.3f}")

    result = trainer.fit(callback=progress)
    return result.checkpoint


def _preview(real: np.ndarray, layout: np.ndarray, synth: np.ndarray, spacing_xyz, path: Path) -> None:
    """Real | layout | synthetic; axial (top) and coronal (bottom) through the largest nodule's centre."""
    from scipy import ndimage as ndi

    from ..data.preview import apply_window, write_png
    from ..evaluation.figures import focus_slices

    z, y = focus_slices(layout, real.shape)  # the largest nodule's centre, as in evaluation montages
    colours = np.array([[0, 0, 0], [40, 110, 200], [255, 170, 40]], dtype=np.uint8)

    def tiles(axial: bool) -> list:
        out = []
        for kind, vol in (("ct", real), ("layout", layout), ("ct", synth)):
            sl = vol[z] if axial else vol[::-1, y, :]
            if not axial:
                zoom = (spacing_xyz[2] / spacing_xyz[0], 1.0)
                sl = ndi.zoom(sl.astype(np.float32), zoom, order=0 if kind == "layout" else 1)
            if kind == "layout":
                out.append(colours[np.clip(np.rint(sl).astype(int), 0, 2)])
            else:
                out.append(np.repeat(apply_window(sl, "lung")[..., None], 3, axis=2))
        return out

    rows = []
    for axial in (True, False):
        t = tiles(axial)
        rows.append(np.concatenate([np.pad(a, ((0, 0), (0, 4), (0, 0))) for a in t], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    write_png(path, np.concatenate(rows, axis=0))


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from ..checkpoint import load_checkpoint
    from ..data.io import write_image
    from ..device import resolve_device
    from ..evaluation import layout_fidelity, paired_metrics
    from ..evaluation.report import json_safe
    from ..phantom import make_phantom
    from ..sampling import SamplerConfig, StepInfo
    from ..sampling.runtime import RuntimeOptions
    from ..synthesis import synthesize_case

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = resolve_device(args.device)

    source = "checkpoint"
    path = Path(args.checkpoint) if args.checkpoint else None
    if path is None and BUNDLED.is_file():
        path, source = BUNDLED, "bundled demo model"
    if path is None:
        source = "tiny model trained on the spot (no bundled demo model found): shows the pipeline, not realism"
        _log(f"model: {source}; {args.quick_train_steps} steps")
        path = _quick_model(out, args.quick_train_steps, args.seed, str(device))
    ckpt = load_checkpoint(path, map_location=device)
    _log(f"model: {path} ({ckpt.config.preset or 'custom'}, grid {ckpt.config.grid}, step {ckpt.step})")

    _log(f"phantom: {tuple(args.phantom_size)} voxels at {tuple(args.phantom_spacing)} mm, seed {args.seed}")
    ph = make_phantom(tuple(args.phantom_size), tuple(args.phantom_spacing), seed=args.seed, nodules=2)
    write_image(ph.ct, out / "real_ct.nrrd")
    write_image(ph.layout, out / "layout.nrrd")

    sampler = SamplerConfig(args.sampler, steps=args.steps)
    last = [0.0]

    def progress(info: StepInfo) -> None:
        if time.monotonic() - last[0] > 5 or info.step == info.total:
            last[0] = time.monotonic()
            _log(f"  sampling step {info.step}/{info.total}  eta {info.eta_s:.0f} s")

    result = synthesize_case(
        ph.ct, ph.layout, ckpt.model, sampler=sampler, seeds=[args.seed], precision=args.precision, callback=progress
    )
    synth = result.images[0]
    write_image(synth, out / "synthetic_ct.nrrd")
    real_a, lay_a, syn_a = (sitk.GetArrayFromImage(i) for i in (ph.ct, ph.layout, synth))
    _preview(real_a, lay_a, syn_a, ph.ct.GetSpacing(), out / "preview.png")
    summary = {
        "outputs": {
            k: str(out / f)
            for k, f in (
                ("real_ct", "real_ct.nrrd"),
                ("layout", "layout.nrrd"),
                ("synthetic_ct", "synthetic_ct.nrrd"),
                ("preview", "preview.png"),
            )
        },
        "seed": args.seed,
        "model": {
            "path": str(path),
            "source": source,
            "sha256": ckpt.sha256,
            "preset": ckpt.config.preset,
            "grid": list(ckpt.config.grid),
            "step": ckpt.step,
        },
        "sampler": {"name": sampler.name, "steps": args.steps, "aas": True},
        "device": str(device),
        "runtime": RuntimeOptions(precision=args.precision).resolved(device).to_dict(),
        "timing_s": {
            **{k: round(v, 2) for k, v in result.timing_s.items()},
            "wall": round(time.perf_counter() - started, 1),
        },
        "layout_fidelity": layout_fidelity(real_a, syn_a, lay_a, ph.ct.GetSpacing()[::-1]),
        # The same per-region numbers as `lungddpm evaluate` and the Slicer metrics table.
        "metrics": paired_metrics(real_a, syn_a, lay_a),
    }
    summary = json_safe(summary)  # strict JSON: an infinite PSNR (identical region) becomes "inf"
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0
