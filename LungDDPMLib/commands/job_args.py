"""Arguments shared by ``lungddpm synthesize`` and ``lungddpm worker``: both build a worker ``Job``."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple

from ..config import LABEL_LUNG, LABEL_NODULE, LABEL_OF_TYPE, NODULE_LABELS
from ..job import CHOICES, OUT_FORMATS


def add_job_arguments(p: argparse.ArgumentParser, *, job_file: bool) -> None:
    src = p.add_argument_group("inputs (one case, or a folder batch)")
    src.add_argument("--ct", help="CT file (NRRD, NIfTI, MetaImage) or DICOM folder")
    src.add_argument("--layout", help="layout: label map (0/1/2-5 or --lung-labels/--nodule-labels) or .seg.nrrd")
    src.add_argument(
        "--out",
        help="output image for one case (.nrrd, .nii.gz, .nii or .mha, or a name with --format); with N samples: "
        "OUT_0..OUT_N-1",
    )
    src.add_argument(
        "--format",
        dest="out_format",
        choices=tuple(OUT_FORMATS),
        help="output format (default: from --out's suffix; a batch: nrrd). dicom: <name>_dicom/, a CT series "
        "marked synthetic (joining the source study when --ct is a DICOM folder), and <name>_seg.dcm, the layout "
        "as a DICOM SEG; needs pip install 'lungddpm[dicom]'",
    )
    src.add_argument("--ct-dir", help="batch: folder of CTs (paired with layouts by name)")
    src.add_argument("--layout-dir", help="batch: folder of layouts (default: in --ct-dir, named *_layout)")
    src.add_argument("--out-dir", help="batch: output folder (finished cases are skipped when run again)")
    if job_file:
        src.add_argument("--job", help="a JSON job file instead of the arguments above")
    m = p.add_argument_group("model and sampling")
    m.add_argument(
        "--checkpoint",
        default="",
        help="model file or a bundled model's name (default: the bundled demo model; with --mode roi the bundled "
        "ROI model's fast student, and lungddpm-roi its teacher)",
    )
    m.add_argument(
        "--recipe",
        choices=CHOICES["recipe"],
        default="lungddpm",
        help="lungddpm (default): our sampler, AAS and exact composite; published: the authors' sample.py step by "
        "step, for Lung-DDPM and Lung-DDPM+ files only (it fixes the sampler: no --sampler/--steps/--eta/--no-aas/"
        "--feather/--roi-margin)",
    )
    add_sampler_arguments(m)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--num-samples", type=int, default=1, help="samples per case (seeds SEED..SEED+N-1)")
    m.add_argument(
        "--mode",
        choices=("full", "roi"),
        help="full: whole-lung synthesis; roi: each nodule's patch at the CT's own spacing, composited back into the "
        "real CT. Must match the model (checked); without --checkpoint it picks the bundled model of that mode",
    )
    m.add_argument("--feather", type=int, default=0, help="soft AAS seam width in voxels")
    m.add_argument(
        "--roi-margin",
        dest="roi_margin_mm",
        type=float,
        help="roi mode: regenerate each nodule and the lung within this many mm of it, keep the rest real "
        "(default 3; negative: the whole layout inside each patch)",
    )
    m.add_argument("--cuda-graphs", action="store_true", help="replay the network as CUDA graphs (CUDA only)")
    m.add_argument(
        "--batch-size",
        type=int,
        help="samples per network call (default 1: each sample then depends only on its seed, bit for bit)",
    )
    lay = p.add_argument_group("layout interpretation")
    lay.add_argument(
        "--lung-labels",
        type=label_values,
        nargs="+",
        help=f"label values that mean lung (default {values_text((LABEL_LUNG,))})",
    )
    lay.add_argument(
        "--nodule-labels",
        type=label_values,
        nargs="+",
        help=f"label values that mean nodule (default {values_text(NODULE_LABELS)}: {LABEL_NODULE} a nodule, "
        + ", ".join(f"{v} {kind}" for kind, v in LABEL_OF_TYPE.items())
        + "; less any value given as lung or ignored)",
    )
    lay.add_argument("--lung-segments", nargs="+", help=".seg.nrrd segment names for lung")
    lay.add_argument("--nodule-segments", nargs="+", help=".seg.nrrd segment names for nodules")
    lay.add_argument("--ignore-labels", type=label_values, nargs="+", help="label values to treat as background")
    lay.add_argument(
        "--nodule-type",
        dest="nodule_types",
        nargs="+",
        metavar="[KEY=]TYPE",
        help="nodule density class: TYPE (solid, part-solid, ground-glass / GGO) for every nodule, or per nodule "
        "label value or segment name, e.g. 3=ground-glass 4=solid (default: label values 3/4/5 and segment names "
        "like 'nodule GGO' state it)",
    )
    lay.add_argument(
        "--resample-layout",
        action="store_true",
        help="accept a layout on another grid that covers the CT only partly (it is resampled onto the CT)",
    )
    lay.add_argument(
        "--auto-lung",
        choices=CHOICES["auto_lung"],
        default="never",
        help="the lung mask found in the CT itself: never (default; the layout must hold the lung), if-missing (when "
        "the layout has no lung, e.g. only nodules were drawn), always (the lung always comes from the CT and the "
        "layout gives only the nodules)",
    )


def add_sampler_arguments(m: argparse._ArgumentGroup) -> None:
    """How the model samples and runs (shared by ``synthesize``, ``worker`` and ``augment``)."""
    m.add_argument(
        "--sampler",
        choices=("dpm++", "ddim", "ddpm"),
        help="default: the model's own - dpm++, or for a student of `lungddpm distill` the sampler it was distilled "
        "for (another one is allowed, with a warning)",
    )
    m.add_argument(
        "--steps",
        type=int,
        help="network evaluations (default: dpm++ 20, ddim 50, ddpm all; a distilled student: its own steps)",
    )
    m.add_argument(
        "--density",
        default="auto",
        help="nodule density: auto (each class at its typical HU: solid 6, ground glass -625 with a narrow texture, "
        "part-solid -552 around a -60 HU core of 0.4 its diameter; models that draw classes on the HU scale only), "
        "off (the model alone), or per class, e.g. ground-glass=-650,part-solid=-600/0@0.5,solid=off",
    )
    m.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity")
    m.add_argument("--no-aas", action="store_true", help="do not blend the real anatomy in while sampling")
    m.add_argument(
        "--blend-from",
        type=int,
        help="blend after steps starting at a level <= this (0..T-1, as published --blend_from; default: all)",
    )
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    m.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto (default): bf16 + channels-last where the device runs bf16 natively, else fp32",
    )
    m.add_argument("--channels-last", action="store_true", help="run the network in channels-last-3d memory layout")
    m.add_argument(
        "--compile", action="store_true", help="torch.compile the network (slow first step; eager if it fails)"
    )


def values_text(values: Sequence[int]) -> str:
    """Label values as a user writes them: ``1``, ``2-5``, ``1,3``."""
    v = sorted(values)
    if len(v) > 2 and v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}-{v[-1]}"
    return ",".join(str(x) for x in v)


def label_values(text: str) -> List[int]:
    """One command-line token of label values: ``3`` or ``1,3`` (``--lung-labels 1,3`` and ``1 3`` both work)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"label values must be whole numbers like 1 or 1,3, got {text!r}") from None


def _flat(groups: Optional[List[List[int]]]) -> Optional[List[int]]:
    return None if groups is None else [v for group in groups for v in group]


def job_from_args(args: argparse.Namespace) -> Any:
    from ..errors import InputError
    from ..worker import Job, cases_from_folders, out_format_of, single_case

    if getattr(args, "job", None):
        return Job.from_json_file(args.job)
    single = args.ct or args.layout or args.out
    batch = args.ct_dir or args.out_dir
    if single and batch:
        raise InputError("give either --ct/--layout/--out (one case) or --ct-dir/--out-dir (a batch), not both")
    if single:
        if not (args.ct and args.layout and args.out):
            raise InputError("one case needs --ct, --layout and --out")
        wanted = getattr(args, "out_format", None)
        cases = [single_case(args.ct, args.layout, args.out, wanted)]
        out_format = out_format_of(args.out, wanted)
    elif batch:
        if not (args.ct_dir and args.out_dir):
            raise InputError(
                "a batch needs --ct-dir and --out-dir (and --layout-dir unless layouts sit beside the CTs)"
            )
        cases = cases_from_folders(args.ct_dir, args.layout_dir, args.out_dir)
        out_format = getattr(args, "out_format", None) or "nrrd"
    else:
        raise InputError(
            "nothing to do: give --ct/--layout/--out, --ct-dir/--out-dir"
            + (" or --job" if hasattr(args, "job") else "")
        )
    same_names = ("checkpoint", "sampler", "steps", "eta", "seed", "num_samples", "mode", "blend_from", "device")
    same_names += ("precision", "batch_size", "lung_labels", "nodule_labels", "lung_segments", "nodule_segments")
    same_names += ("auto_lung", "channels_last", "compile", "cuda_graphs", "ignore_labels", "resample_layout")
    same_names += ("nodule_types", "roi_margin_mm", "density", "recipe")
    for name in ("lung_labels", "nodule_labels", "ignore_labels"):
        setattr(args, name, _flat(getattr(args, name)))
    return Job(
        cases=cases,
        aas=not args.no_aas,
        feather_voxels=args.feather,
        out_format=out_format,
        **{name: getattr(args, name) for name in same_names},
    )


def cancel_on_signals() -> Tuple[Callable[[], bool], Callable[[], None]]:
    """SIGTERM and SIGINT set a flag that the sampler polls every step; returns (should_stop, restore)."""
    flag = threading.Event()
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        flag.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return flag.is_set, restore


def rank_and_world() -> Tuple[int, int]:
    """Under torchrun each process takes every WORLD_SIZE-th case; no process group is needed for that."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def remember_done(emit: Callable[[dict], None]) -> Tuple[Callable[[dict], None], dict]:
    """``emit`` that also keeps the job's ``done`` event in the returned dict: the exit code is decided from it
    (:func:`.exit_codes.job_exit_code`), so the process's status and its last event can never disagree."""
    done: dict = {}

    def remembering(event: dict) -> None:
        if event.get("type") == "done":
            done.clear()
            done.update(event)
        emit(event)

    return remembering, done
