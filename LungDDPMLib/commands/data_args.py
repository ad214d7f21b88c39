"""The training-data arguments of ``lungddpm train`` and ``lungddpm distill``, and the dataset they build.

One definition, so that a student is distilled on data prepared exactly as its teacher was trained on: the model's
own data handling (:func:`LungDDPMLib.data.datasets.model_data_options`: grid, intensities, spatial mode, axis order,
condition channels incl. the CT channels of ``roi-context``) plus the run's seed and the preset's flips.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

#: Presets that train by the published recipe, which never flips an item; ours flip half of them along x.
PUBLISHED_RECIPE_PRESETS = ("lung-ddpm", "lung-ddpm-plus")
#: How often an item is flipped left-right (x, NIfTI i) when flipping is on.
FLIP_PROB = 0.5


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder of paired CTs and layouts (or CT folder with --layout-dir)")
    src.add_argument("--phantom", type=int, metavar="N", help="train on N generated phantoms")
    p.add_argument("--layout-dir", help="layouts in a separate folder, matched by name")
    p.add_argument("--phantom-size", type=int, nargs=3, default=(128, 128, 80), metavar=("X", "Y", "Z"))
    p.add_argument("--phantom-spacing", type=float, nargs=3, default=(1.6, 1.6, 3.0), metavar=("X", "Y", "Z"))
    p.add_argument(
        "--phantom-nodule-mix",
        metavar="TYPE=P,...",
        help="class mix of the random phantom nodules, e.g. solid=0.34,part-solid=0.33,ground-glass=0.33 "
        "(default: solid=0.6,part-solid=0.2,ground-glass=0.2, as in screening cohorts)",
    )
    p.add_argument(
        "--phantom-nodules", type=int, default=None, metavar="N", help="random nodules per phantom (default 2)"
    )
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip half of the items left-right (x, NIfTI i) at random; default: off for the published presets "
        "(lung-ddpm, lung-ddpm-plus: the published training never flips), on for ours (--no-flip turns it off)",
    )
    p.add_argument(
        "--roi-crop",
        choices=("ours", "published"),
        help="how roi items are cut: published (Lung-DDPM+'s dataset.py: the CT min-max scaled per axial slice over "
        "the whole volume, a cube around a random nodule voxel clipped inside the volume; the default for "
        "lung-ddpm-plus) or ours (a patch centred on a nodule, shifted, scaled on its own; the default otherwise)",
    )


def flip_prob(preset_name: str, flip: Optional[bool]) -> float:
    """The chance that a training item is flipped left-right: ``--flip``/``--no-flip`` if given, else the
    preset's recipe (never for the published presets, :data:`FLIP_PROB` for ours)."""
    if flip is None:
        flip = preset_name not in PUBLISHED_RECIPE_PRESETS
    return FLIP_PROB if flip else 0.0


def augmentation_options(args: argparse.Namespace, preset_name: str) -> Dict[str, Any]:
    """The dataset options the command adds to the model's data handling: the seed, the preset's flips and, when
    asked, how roi items are cut (the model's own rule otherwise)."""
    options: Dict[str, Any] = {"seed": args.seed, "flip_prob": flip_prob(preset_name, args.flip)}
    if getattr(args, "roi_crop", None) is not None:
        options["roi_crop"] = args.roi_crop
    return options


def dataset_from_args(args: argparse.Namespace, model_cfg: Any) -> Any:
    """The phantom or paired-folder dataset of ``args``, prepared for a model of ``model_cfg``."""
    from ..data.datasets import PairedFolderDataset, PhantomDataset, model_data_options
    from ..errors import InputError
    from ..phantom.nodules import parse_nodule_mix

    data_kwargs = {**model_data_options(model_cfg), **augmentation_options(args, model_cfg.preset)}
    if args.phantom_nodule_mix and args.phantom is None:
        raise InputError("--phantom-nodule-mix sets the nodules of generated phantoms: it needs --phantom N")
    if args.phantom is None:
        return PairedFolderDataset(args.data, args.layout_dir, **data_kwargs)
    if args.phantom < 1:
        raise InputError(f"--phantom needs at least 1 phantom, got {args.phantom}")
    return PhantomDataset(
        args.phantom,
        phantom_size=tuple(args.phantom_size),
        phantom_spacing=tuple(args.phantom_spacing),
        base_seed=args.seed,
        nodules=args.phantom_nodules,
        nodule_mix=parse_nodule_mix(args.phantom_nodule_mix),
        **data_kwargs,
    )
