"""Procedural thoracic CT phantom: CT in HU, layout (0 background, 1 lung, 2 nodule) and tissue classes.

No patient data can ship with LungDDPM, so this phantom is the test data, the demo data and the training
data of the bundled demo model. It is deterministic for a seed (each stage draws from its own child of the
seed, so adding nodules does not move the vessels), and the default 256x256x160 volume at 0.8x0.8x1.5 mm
is generated in a few seconds on a laptop CPU.

Example:
    >>> from LungDDPMLib.phantom import make_phantom, NoduleSpec
    >>> ph = make_phantom(size=(96, 96, 64), spacing=(2.0, 2.0, 3.0), seed=1,
    ...                   nodules=[NoduleSpec(12, "part-solid", "spiculated", side="left")])
    >>> ph.ct.GetSize(), ph.info["nodules"][0]["side"]
    ((96, 96, 64), 'left')
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..config import LABEL_BACKGROUND, LABEL_LUNG, LABEL_OF_TYPE
from ..errors import InputError
from . import tissues as T
from .anatomy import build_anatomy, pleura_depth
from .frame import Frame
from .nodules import NoduleSpec, place_nodules, random_specs, render_nodule
from .noise import correlated_noise, psf_blur, smooth_field
from .vessels import choose_targets, grow_tree, render_airways, render_vessels

DEFAULT_SIZE = (256, 256, 160)
DEFAULT_SPACING = (0.8, 0.8, 1.5)
#: Bytes of working memory per voxel during generation (float32 HU, occupancy, noise, masks).
BYTES_PER_VOXEL = 24
MIN_SIZE, MAX_SIZE = 32, 1024

NodulesArg = Union[None, int, Sequence[NoduleSpec]]


@dataclass
class Phantom:
    """A generated phantom.

    Attributes:
        ct: int16 HU volume (LPS, identity direction, centred on the origin).
        layout: uint8 label map on the same grid: 0 background, 1 lung, nodules by class (3 solid, 4 part-solid,
            5 ground-glass), as :data:`LungDDPMLib.config.LABEL_OF_TYPE` says.
        tissue: uint8 tissue classes (:mod:`LungDDPMLib.phantom.tissues`), for statistics and tests.
        info: seed, geometry, nodule list (centres in LPS mm), timings; JSON-serialisable.
    """

    ct: sitk.Image
    layout: sitk.Image
    tissue: sitk.Image
    info: Dict[str, Any]


def _validate(size: Sequence[int], spacing: Sequence[float]) -> Tuple[Tuple[int, int, int], Tuple[float, ...]]:
    from ..data.validation import check_memory

    if len(size) != 3 or len(spacing) != 3:
        raise InputError(f"size and spacing need three values (x, y, z), got size={size}, spacing={spacing}")
    if any(int(n) != n or not MIN_SIZE <= n <= MAX_SIZE for n in size):
        raise InputError(f"phantom size {tuple(size)} must be whole numbers between {MIN_SIZE} and {MAX_SIZE}")
    if any(not 0.1 <= float(s) <= 10.0 for s in spacing):
        raise InputError(f"phantom spacing {tuple(spacing)} mm must lie between 0.1 and 10 mm per axis")
    check_memory(int(np.prod(size)) * BYTES_PER_VOXEL, f"a {'x'.join(str(int(n)) for n in size)} phantom")
    return tuple(int(n) for n in size), tuple(float(s) for s in spacing)


def _image(array: np.ndarray, frame: Frame) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(frame.spacing_xyz())
    img.SetOrigin(frame.origin_xyz())
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def make_phantom(
    size: Sequence[int] = DEFAULT_SIZE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = 0,
    nodules: NodulesArg = None,
    noise_hu: float = 18.0,
    nodule_mix: Optional[Dict[str, float]] = None,
) -> Phantom:
    """Generate a thoracic CT phantom.

    Args:
        size: voxels ``(x, y, z)`` (SimpleITK order).
        spacing: mm ``(x, y, z)``.
        seed: everything random derives from it; the same seed gives the same volume.
        nodules: ``None`` for two random nodules, an ``int`` for that many random nodules (0: healthy),
            or a list of :class:`NoduleSpec`.
        noise_hu: standard deviation of the (correlated) CT noise.
        nodule_mix: class shares of random nodules (:func:`~LungDDPMLib.phantom.nodules.parse_nodule_mix`);
            default :data:`~LungDDPMLib.phantom.nodules.DEFAULT_MIX`.
    """
    size, spacing = _validate(size, spacing)
    if noise_hu < 0:
        raise InputError(f"noise_hu must be >= 0, got {noise_hu}")
    timings: Dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    rng_trees, rng_tex, rng_nod, rng_noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    frame = Frame.create(size[::-1], spacing[::-1])
    if nodules is None:
        specs = random_specs(2, rng_nod, nodule_mix)
    elif isinstance(nodules, (int, np.integer)):
        if nodules < 0:
            raise InputError(f"number of nodules must be >= 0, got {nodules}")
        specs = random_specs(int(nodules), rng_nod, nodule_mix)
    else:
        specs = list(nodules)
        if not all(isinstance(s, NoduleSpec) for s in specs):
            raise InputError("nodules must be None, a count, or a list of NoduleSpec")

    anatomy = build_anatomy(frame)
    tissue = anatomy.tissue
    lap("anatomy")

    # Intrapulmonary vessel and airway trees.
    occupancy = np.zeros(frame.shape, dtype=np.float32)
    min_vessel = max(0.4, 0.3 * frame.voxel_mm)
    n_segments = 0
    for side, lung in anatomy.lungs.items():
        for kind, root, radius in anatomy.tree_roots[side]:
            airway = kind == "airway"
            targets = choose_targets(frame, lung, 5 if airway else 14, rng_trees)
            segments = grow_tree(
                frame,
                lung,
                root,
                radius,
                targets,
                rng_trees,
                min_radius=max(1.0, frame.voxel_mm) if airway else min_vessel,
                max_segments=200 if airway else 2500,
            )
            n_segments += len(segments)
            if airway:
                render_airways(tissue, occupancy, frame, segments)
            else:
                render_vessels(occupancy, frame, segments)
    lap("trees")

    # Intensities: tissue means plus low-frequency heterogeneity, lung texture and gravity gradient.
    mean, std = T.lookup_tables()
    hu = mean[tissue]
    hu += std[tissue] * smooth_field(frame.shape, frame.spacing, 6.0, rng_tex)
    lung = tissue == T.LUNG
    fine = correlated_noise(frame.shape, [0.9 / s for s in frame.spacing], rng_tex)
    depth_gradient = np.clip(frame.y / (84.0 * frame.scale), -1, 1).astype(np.float32)
    lung_hu = T.LUNG_HU + 0.5 * T.LUNG_GRAVITY_HU * depth_gradient + T.LUNG_TEXTURE_HU * fine
    np.copyto(hu, lung_hu, where=lung)
    del fine, lung_hu
    vessel = occupancy * np.isin(tissue, (T.LUNG, T.MEDIASTINAL_FAT))
    hu += vessel * (T.VESSEL_HU - hu)
    tissue[(vessel >= 0.5) & lung] = T.VESSEL
    del occupancy, vessel
    lap("intensities")

    lung_region = anatomy.lungs["left"] | anatomy.lungs["right"]
    placed = place_nodules(specs, frame, anatomy.lungs, lambda p: pleura_depth(frame, p), rng_nod)
    classes = np.zeros(frame.shape, dtype=np.uint8)
    counts = [render_nodule(hu, tissue, lung_region, frame, n, rng_nod, classes) for n in placed]
    lap("nodules")

    layout = np.full(frame.shape, LABEL_BACKGROUND, dtype=np.uint8)
    layout[lung_region & np.isin(tissue, (T.LUNG, T.VESSEL, T.AIRWAY_LUMEN, T.AIRWAY_WALL))] = LABEL_LUNG
    nodule = tissue == T.NODULE
    layout[nodule] = classes[nodule]  # each nodule labelled with its class (3 solid, 4 part-solid, 5 ground-glass)
    del classes, nodule

    # Scanner: point-spread function (partial-volume edges), then correlated noise.
    sz, sy, sx = frame.spacing
    psf_blur(hu, frame.spacing, (max(1.0, sz), max(1.0, 1.2 * sy), max(1.0, 1.2 * sx)))
    if noise_hu > 0:
        hu += np.float32(noise_hu) * correlated_noise(frame.shape, (0.4, 0.7, 0.7), rng_noise)
    np.clip(hu, -1024, 3071, out=hu)
    ct = np.rint(hu).astype(np.int16)
    lap("scanner")

    info = {
        "generator": "LungDDPMLib.phantom",
        "seed": int(seed),
        "size": list(size),
        "spacing": list(spacing),
        "anatomy_scale": round(frame.scale, 4),
        "noise_hu": float(noise_hu),
        "tree_segments": int(n_segments),
        "nodules": [n.info(frame, c) for n, c in zip(placed, counts)],
        "labels": {"background": LABEL_BACKGROUND, "lung": LABEL_LUNG, **LABEL_OF_TYPE},
        "tissue_codes": {name: code for name, (code, _, _) in T.TISSUES.items()},
        "timings_s": {**timings, "total": round(time.perf_counter() - t0, 3)},
    }
    return Phantom(_image(ct, frame), _image(layout, frame), _image(tissue, frame), info)


def save_phantom(
    outdir: Union[str, Path],
    phantom: Optional[Phantom] = None,
    name: str = "phantom",
    fmt: str = "nrrd",
    seg_nrrd: bool = True,
    **make_kwargs: Any,
) -> Dict[str, Path]:
    """Write a phantom (generated with ``make_kwargs`` if not given) and return the written paths.

    Files: ``<name>_ct.<fmt>``, ``<name>_layout.<fmt>``, optionally ``<name>_layout.seg.nrrd`` (loads in
    3D Slicer as a segmentation with "lung" and "nodule" segments) and ``<name>_info.json``.
    """
    from ..data.io import write_image
    from ..data.segmentation import write_segmentation

    if fmt not in ("nrrd", "nii.gz", "nii", "mha"):
        raise InputError(f"unknown phantom format {fmt!r}; use nrrd, nii.gz, nii or mha")
    if phantom is None:
        phantom = make_phantom(**make_kwargs)
    elif make_kwargs:
        raise InputError(f"pass either a phantom or generation options, not both ({sorted(make_kwargs)})")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "ct": write_image(phantom.ct, out / f"{name}_ct.{fmt}"),
        "layout": write_image(phantom.layout, out / f"{name}_layout.{fmt}"),
    }
    if seg_nrrd:
        paths["seg"] = write_segmentation(phantom.layout, out / f"{name}_layout.seg.nrrd")
    info_path = out / f"{name}_info.json"
    info_path.write_text(json.dumps(phantom.info, indent=2, sort_keys=True))
    paths["info"] = info_path
    return paths
