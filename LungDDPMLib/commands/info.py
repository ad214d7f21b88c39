"""``lungddpm info CHECKPOINT``: describe a checkpoint as JSON, loading it safely."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a checkpoint (format, architecture, sha256) as JSON")
    p.add_argument("checkpoint", help="a .pt file: a LungDDPM checkpoint or the published Lung-DDPM file")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to inspect")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..model import count_parameters
    from ..registry import identify, known_models

    ckpt = load_checkpoint(args.checkpoint, weights=args.weights)
    cfg = ckpt.config
    info = {
        "path": ckpt.path,
        "format": ckpt.format,
        "preset": cfg.preset or None,
        "parameters": count_parameters(ckpt.model.denoise_fn),
        "timesteps": cfg.schedule.timesteps,
        "layout_channels": list(cfg.unet.layout_channels),
        "nodule_types": list(cfg.nodule_types),
        "normalization": cfg.normalization,
        "spatial_mode": cfg.spatial_mode,
        "grid": list(cfg.grid),
        "step": ckpt.step,
        "weights": ckpt.weights,
        "sha256": ckpt.sha256,
        # A student of `lungddpm distill`: its teacher, and the sampler and steps synthesis runs it with.
        "distilled": ckpt.distillation.to_dict() if ckpt.distillation is not None else None,
        "provenance": ckpt.provenance,
    }
    # What the weights are (family, from the key layout or the config record) and what the file is (checksum or
    # name); a generic name like best_model.pt is confirmed or refuted by the weights.
    info["architecture"] = ckpt.recognition
    family = ckpt.recognition.get("family")
    known, how = identify(ckpt.path, ckpt.sha256)
    if known is None and family is not None and ckpt.format != "lungddpm":
        known = next((m for m in known_models() if m.key == family), None)
        how = "architecture"
    elif known is not None and how == "name" and family == known.key:
        how = "name, confirmed by the architecture"
    info["recognised_as"] = None if known is None else {"key": known.key, "title": known.title, "by": how}
    if family is not None:
        info["recipes"] = {"lungddpm": "ours (default)", "published": f"the authors' sample.py ({family})"}
    if known is not None and known.preset != (cfg.preset or None):
        info["warning"] = f"named like {known.key}, whose preset is {known.preset}, but the weights are {cfg.preset}"
    print(json.dumps(info, indent=2))
    return 0
