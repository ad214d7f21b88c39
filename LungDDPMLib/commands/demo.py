"""``lungddpm demo``: the embedded default - a phantom CT with nodules through the whole pipeline.

The phantom has one nodule of each density class (solid, part-solid, ground-glass). By default (``--mode both``) the
whole-lung model synthesises the lung and the nodule ROI model then redraws each nodule as its class at the CT's own
spacing - the whole-lung model knows no classes and draws every nodule dense; ``--mode full`` or ``--mode roi`` runs
one of them alone. Writes the real CT, the layout and the synthetic CT (NRRD), a preview PNG (real | layout |
synthetic, axial and coronal through the largest nodule, then each nodule close up: real | synthetic) and
``summary.json`` (timing, seed, models, sampler, layout fidelity). The whole-lung model is, in order:
``--checkpoint``, the bundled demo model, or - when neither exists - a tiny model trained on phantoms for a few
hundred steps on the spot, which shows the pipeline working but not realistic synthesis (the summary says which).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..registry import DEMO_FILE as BUNDLED
from ..registry import bundled_model, model_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a phantom (the embedded default)")
    p.add_argument("--out", default="lungddpm-demo", help="output folder (default: ./lungddpm-demo)")
    p.add_argument("--checkpoint", help="whole-lung model to use instead of the bundled demo model")
    p.add_argument(
        "--mode",
        choices=("both", "full", "roi"),
        default="both",
        help="both (default): the whole-lung model draws the lung, then the ROI model redraws each nodule as its "
        "class; full: the whole-lung model alone; roi: the ROI model alone (only the nodules are new)",
    )
    p.add_argument("--roi-checkpoint", help="nodule ROI model to use instead of the bundled one")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and of the sample")
    p.add_argument(
        "--sampler", choices=("dpm++", "ddim", "ddpm"), help="default: each model's own (dpm++; distilled: its own)"
    )
    p.add_argument("--steps", type=int, default=None, help="network evaluations (default: the sampler's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument(
        "--density",
        default="auto",
        help="nodule density as in `lungddpm synthesize --density` (default auto: each class at its typical HU)",
    )
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


#: Layout colours of the preview: background, lung, unstated nodule, solid, part-solid, ground-glass.
LAYOUT_COLOURS = np.array(
    [[0, 0, 0], [40, 110, 200], [255, 170, 40], [230, 60, 50], [250, 200, 40], [120, 230, 210]], dtype=np.uint8
)
#: The demo's nodules: one of each class, sizes typical of screening findings (mm).
DEMO_NODULES = (("solid", 11.0), ("part-solid", 15.0), ("ground-glass", 13.0))


def _grey(sl: np.ndarray) -> np.ndarray:
    from ..data.preview import apply_window

    return np.repeat(apply_window(sl, "lung")[..., None], 3, axis=2)


def _close_ups(real: np.ndarray, layout: np.ndarray, synth: np.ndarray, spacing_xyz) -> list:
    """Per nodule (by class order), the axial slice through its centre, 40 mm wide: real | synthetic."""
    from scipy import ndimage as ndi

    from ..config import LABEL_OF_TYPE, is_nodule

    parts, _ = ndi.label(is_nodule(layout))
    boxes = ndi.find_objects(parts)
    order = {v: i for i, v in enumerate(LABEL_OF_TYPE.values())}
    found = []
    for index, box in enumerate(boxes, start=1):
        label = int(np.bincount(layout[box][parts[box] == index]).argmax())
        found.append((order.get(label, -1), [(b.start + b.stop) // 2 for b in box]))
    half = [max(4, round(20.0 / s)) for s in spacing_xyz[1::-1]]  # (y, x) voxels for 20 mm
    tiles = []
    for _, (z, y, x) in sorted(found):
        pair = []
        for vol in (real, synth):
            sl = np.full((2 * half[0], 2 * half[1]), -1000.0, np.float32)
            src = vol[z, max(y - half[0], 0) : y + half[0], max(x - half[1], 0) : x + half[1]]
            oy, ox = max(half[0] - y, 0), max(half[1] - x, 0)
            sl[oy : oy + src.shape[0], ox : ox + src.shape[1]] = src
            zoom = max(1, round(96 / sl.shape[0]))
            pair.append(np.kron(_grey(sl), np.ones((zoom, zoom, 1), np.uint8)))
        tiles.append(np.concatenate([pair[0], np.zeros((pair[0].shape[0], 2, 3), np.uint8), pair[1]], axis=1))
    return tiles


def _preview(real: np.ndarray, layout: np.ndarray, synth: np.ndarray, spacing_xyz, path: Path) -> None:
    """Real | layout | synthetic; axial and coronal through the largest nodule's centre; then every nodule close
    up (real | synthetic, solid, part-solid, ground-glass from left to right)."""
    from scipy import ndimage as ndi

    from ..data.preview import write_png
    from ..evaluation.figures import focus_slices

    z, y = focus_slices(layout, real.shape)  # the largest nodule's centre, as in evaluation montages

    def tiles(axial: bool) -> list:
        out = []
        for kind, vol in (("ct", real), ("layout", layout), ("ct", synth)):
            sl = vol[z] if axial else vol[::-1, y, :]
            if not axial:
                zoom = (spacing_xyz[2] / spacing_xyz[0], 1.0)
                sl = ndi.zoom(sl.astype(np.float32), zoom, order=0 if kind == "layout" else 1)
            if kind == "layout":
                out.append(LAYOUT_COLOURS[np.clip(np.rint(sl).astype(int), 0, len(LAYOUT_COLOURS) - 1)])
            else:
                out.append(_grey(sl))
        return out

    rows = []
    for axial in (True, False):
        t = tiles(axial)
        rows.append(np.concatenate([np.pad(a, ((0, 0), (0, 4), (0, 0))) for a in t], axis=1))
    close = _close_ups(real, layout, synth, spacing_xyz)
    if close:
        height = max(c.shape[0] for c in close)
        close = [np.pad(c, ((0, height - c.shape[0]), (0, 8), (0, 0))) for c in close]
        rows.append(np.concatenate(close, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    write_png(path, np.concatenate(rows, axis=0))


def _without_nodules(layout: Any) -> Any:
    """The layout with every nodule turned into lung (same geometry)."""
    import SimpleITK as sitk

    from ..config import LABEL_LUNG, is_nodule

    labels = sitk.GetArrayFromImage(layout)
    labels[is_nodule(labels)] = LABEL_LUNG
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(layout)
    return out


def _demo_phantom(args: argparse.Namespace) -> Any:
    """The demo phantom with one nodule of each class; smaller nodules where a small phantom has no room."""
    from ..errors import InputError
    from ..phantom import NoduleSpec, make_phantom

    for scale in (1.0, 0.7, 0.5):
        specs = [NoduleSpec(round(d * scale, 1), kind) for kind, d in DEMO_NODULES]
        try:
            return make_phantom(tuple(args.phantom_size), tuple(args.phantom_spacing), seed=args.seed, nodules=specs)
        except InputError:
            continue
    return make_phantom(tuple(args.phantom_size), tuple(args.phantom_spacing), seed=args.seed, nodules=2)


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from ..checkpoint import load_checkpoint
    from ..data.io import write_image
    from ..device import resolve_device
    from ..errors import InputError
    from ..evaluation import layout_fidelity, paired_metrics
    from ..evaluation.report import json_safe
    from ..nodule_density import density_record, resolve_density
    from ..sampling import StepInfo
    from ..sampling.distilled import sampler_for
    from ..sampling.runtime import RuntimeOptions
    from ..synthesis import synthesize_case

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = resolve_device(args.device)

    models: Dict[str, Any] = {}
    if args.mode in ("both", "full"):
        path, source = (Path(args.checkpoint), "checkpoint") if args.checkpoint else (None, "")
        if path is None and BUNDLED.is_file():
            path, source = BUNDLED, "bundled demo model"
        if path is None:
            source = "tiny model trained on the spot (no bundled demo model found): shows the pipeline, not realism"
            _log(f"model: {source}; {args.quick_train_steps} steps")
            path = _quick_model(out, args.quick_train_steps, args.seed, str(device))
        models["full"] = (path, source)
    if args.mode in ("both", "roi"):
        roi_bundled = bundled_model("roi")
        if args.roi_checkpoint:
            models["roi"] = (model_file(args.roi_checkpoint, "roi"), "checkpoint")
        elif roi_bundled.is_file():
            models["roi"] = (roi_bundled, f"bundled nodule ROI model ({roi_bundled.name})")
        elif args.mode == "roi":
            raise InputError(f"the bundled nodule ROI model is missing ({roi_bundled}); pass --roi-checkpoint")
        else:
            _log("the bundled nodule ROI model is missing: the whole-lung model draws the nodules (every class dense)")
    loaded = {role: load_checkpoint(path, map_location=device) for role, (path, _) in models.items()}
    for role, ckpt in loaded.items():
        what = f"{ckpt.config.preset or 'custom'}, grid {ckpt.config.grid}, step {ckpt.step}"
        _log(f"{role} model: {models[role][0]} ({what})")

    _log(f"phantom: {tuple(args.phantom_size)} voxels at {tuple(args.phantom_spacing)} mm, seed {args.seed}")
    ph = _demo_phantom(args)
    write_image(ph.ct, out / "real_ct.nrrd")
    write_image(ph.layout, out / "layout.nrrd")

    samplers = {}
    for role, ckpt in loaded.items():  # a distilled student runs with its own sampler unless one is asked for
        samplers[role], warning = sampler_for(ckpt.distillation, args.sampler, args.steps)
        if warning is not None:
            _log(f"warning: {role} model: {warning}")
    sampler = samplers["full" if "full" in loaded else "roi"]
    last = [0.0]

    def progress(info: StepInfo) -> None:
        if time.monotonic() - last[0] > 5 or info.step == info.total:
            last[0] = time.monotonic()
            _log(f"  sampling step {info.step}/{info.total}  eta {info.eta_s:.0f} s")

    def density_of(role: str) -> Any:
        # With the ROI model, the whole-lung pass draws no nodules: the density is the ROI model's to apply.
        return None if role == "full" and "roi" in loaded else resolve_density(args.density, loaded[role].config)

    synth, timing = ph.ct, {}
    for role, ckpt in loaded.items():  # the whole lung first, then the ROI model draws each nodule as its class
        layout = ph.layout
        if role == "full" and "roi" in loaded:
            # The whole-lung model draws lung where the nodules will be, so the ROI model adds them to lung tissue (as
            # a user adds a nodule to a healthy CT) and is not shown a dense blob inside a ground-glass nodule to keep.
            layout = _without_nodules(ph.layout)
        _log(f"{role}: {'each nodule as its class' if role == 'roi' else 'the whole lung'}")
        result = synthesize_case(
            synth,
            layout,
            ckpt.model,
            sampler=samplers[role],
            seeds=[args.seed],
            precision=args.precision,
            callback=progress,
            density=density_of(role),
        )
        synth = result.images[0]
        timing.update({f"{role}_{k}": v for k, v in result.timing_s.items()})
    write_image(synth, out / "synthetic_ct.nrrd")
    real_a, lay_a, syn_a = (sitk.GetArrayFromImage(i) for i in (ph.ct, ph.layout, synth))
    _preview(real_a, lay_a, syn_a, ph.ct.GetSpacing(), out / "preview.png")

    def describe(role: str) -> Dict[str, Any]:
        ckpt = loaded[role]
        path, source = models[role]
        info = {"path": str(path), "source": source, "sha256": ckpt.sha256, "preset": ckpt.config.preset}
        density = density_record(density_of(role))
        return {**info, "grid": list(ckpt.config.grid), "step": ckpt.step, "density": density}

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
        "mode": args.mode,
        # The model that drew the lung (the ROI model in --mode roi), and the one that drew the nodules.
        "model": describe("full" if "full" in loaded else "roi"),
        "nodule_model": describe("roi") if "roi" in loaded else None,
        "sampler": {"name": sampler.name, "steps": args.steps, "aas": True},
        # a distilled nodule model runs its own sampler and steps (sampler_for), not the lung model's
        "nodule_sampler": (
            {"name": samplers["roi"].name, "steps": samplers["roi"].steps, "levels": samplers["roi"].timesteps}
            if "roi" in loaded
            else None
        ),
        "device": str(device),
        "runtime": RuntimeOptions(precision=args.precision).resolved(device).to_dict(),
        "timing_s": {
            **{k: round(v, 2) for k, v in timing.items()},
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
