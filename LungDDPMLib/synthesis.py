"""One case end to end: a CT and its layout (native geometry, HU) -> synthetic CTs (same geometry, HU).

This is the composition that the CLI, the worker, the demo and the Slicer module share: preprocess to the model
grid and axis order (with the record that inverts it), sample every patch for every seed with AAS, and map the
results back to HU at the input's geometry, compositing them into the real CT so that everything outside the
layout stays bit-exact.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .data.axes import from_model_order, to_model_order
from .data.context import ROI_MARGIN_MM, condition_channels, known_voxels, near_nodules, uses_ct
from .data.layout import layout_labels
from .data.nodule_types import type_report
from .data.pipeline import PreprocessRecord, model_options, postprocess, preprocess
from .data.spatial import layout_region
from .diffusion import DiffusionModel
from .errors import InputError, NumericalError
from .nodule_density import NoduleDensity
from .recipes import DEFAULT_RECIPE, check_recipe
from .sampling import AASConfig, EtaEstimator, RuntimeOptions, SamplerConfig, StepInfo, sample
from .sampling.density import DensityControl, nodule_fields


@dataclass
class SynthesisResult:
    """Synthetic CTs (one per seed, HU, input geometry and pixel type) and how they were made."""

    images: List[sitk.Image]
    seeds: List[int]
    #: How the inputs were mapped to the model grid (``None`` for the published Lung-DDPM+ recipe: it crops itself).
    record: Optional[PreprocessRecord]
    timing_s: Dict[str, float] = field(default_factory=dict)
    #: What the synthesis did with the layout's nodule classes (:func:`~LungDDPMLib.data.nodule_types.type_report`).
    nodule_types: Dict[str, Any] = field(default_factory=dict)
    #: What was generated: the whole ``layout`` (in each patch), or ``nodules + <margin> mm`` (roi mode).
    regenerated: str = "layout"
    #: Which recipe ran (``lungddpm`` or ``published``) and, for the published Lung-DDPM+ one, its cubes.
    recipe: Dict[str, Any] = field(default_factory=lambda: {"name": DEFAULT_RECIPE})


def _density_control(
    model: DiffusionModel,
    item: Any,
    patch: Any,
    known: Optional[np.ndarray],
    wanted: Mapping[str, NoduleDensity],
    order: str,
) -> DensityControl:
    """The density control of one patch: fields built on its native (z, y, x) grid, handed over in model order."""
    labels = from_model_order(item.layout, order)
    regenerated = labels != 0 if known is None else ~from_model_order(known, order)
    # What passes through ground glass (vessels, airway walls) keeps the model's drawing: a density target is the
    # haze's, and the sampler's kept CT stays as it is.
    see_through = known_voxels(from_model_order(item.ct, order), labels, regenerated, patch.norm.window) & regenerated
    drawn = regenerated & ~see_through
    lo, hi = patch.norm.window

    def to_model(hu: float) -> float:
        return (hu - lo) * 2.0 / (hi - lo) - 1.0

    fields = nodule_fields(labels, patch.grid_geometry.spacing[::-1], drawn, wanted, to_model)
    for f in fields:
        f.basis = np.ascontiguousarray(to_model_order(f.basis, order))
        f.regions = np.ascontiguousarray(to_model_order(f.regions, order))
    return DensityControl(model.schedule, fields, next(model.parameters()).device)


def synthesize_case(
    ct: sitk.Image,
    layout: sitk.Image,
    model: DiffusionModel,
    *,
    sampler: Optional[SamplerConfig] = None,
    aas: Optional[AASConfig] = None,
    seeds: Sequence[int] = (0,),
    feather_mm: float = 0.0,
    roi_margin_mm: Optional[float] = None,
    precision: Optional[str] = None,
    batch_size: Optional[int] = None,
    callback: Optional[Callable[[StepInfo], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    runtime: Optional[RuntimeOptions] = None,
    density: Optional[Mapping[str, Optional[NoduleDensity]]] = None,
    recipe: str = DEFAULT_RECIPE,
) -> SynthesisResult:
    """Synthesise ``len(seeds)`` CTs for one layout.

    Args:
        ct: the real CT in HU (its geometry defines the output's).
        layout: labels 0/1/2-5 on the CT's grid (see :func:`LungDDPMLib.data.load_layout`); nodule classes (3-5) are
            used by models trained on them, refused if the model does not know the class, ignored by other models.
        model: a loaded model; its config says grid, normalisation, spatial mode, crop and array order.
        sampler, aas, seeds, precision, batch_size, runtime: as in :func:`LungDDPMLib.sampling.sample` (AAS is on
            by default).
        feather_mm: soft seam inside the layout when compositing into the real CT.
        roi_margin_mm: ``roi`` models only: regenerate each nodule and the lung within this distance of it, and keep
            the rest of the patch (its lung too) from the real CT, which anchors the patch's intensities (default
            :data:`ROI_MARGIN_MM`); a negative value regenerates the whole layout inside each patch.
        callback: progress over all patches and seeds; ``should_stop`` cancels (raises ``SamplingCancelled``).
        density: target densities per nodule class (:mod:`LungDDPMLib.sampling.density`; a class missing or
            ``None``: drawn by the model alone); ``None`` switches the control off. Needs a ``hu-window`` model.
        recipe: ``lungddpm`` (ours) or ``published`` (the authors' ``sample.py``, for Lung-DDPM and Lung-DDPM+
            models only; see :mod:`LungDDPMLib.recipes`): it fixes the sampler and AAS, so ``sampler`` is ignored.
    Returns:
        :class:`SynthesisResult`; nothing partial is returned when cancelled.
    """
    cfg = model.config
    t0 = time.perf_counter()
    # Classes the model was not trained on are refused here, before any work; a model without type conditioning
    # draws typed nodules as plain nodules, and the report says so.
    labels = layout_labels(layout)
    types = type_report(labels, cfg.nodule_types)
    family = check_recipe(recipe, cfg)
    if family is not None and any(v is not None for v in (density or {}).values()):
        raise InputError("the published recipe draws nodules as the authors' code does: use --density off with it")
    options = model_options(cfg)
    recipe_info: Dict[str, Any] = {"name": recipe}
    if family == "lung-ddpm-plus":
        return _published_plus(ct, layout, model, aas, seeds, runtime, precision, callback, should_stop, types, t0)
    if family == "lung-ddpm":
        from .recipes.published import LUNGDDPM_COMPAT_ORDER, LUNGDDPM_SAMPLER, published_runtime

        options["compat_order"] = LUNGDDPM_COMPAT_ORDER
        base = aas if aas is not None else AASConfig()
        aas = dataclasses.replace(base, faithful=True)
        sampler = SamplerConfig(LUNGDDPM_SAMPLER)
        runtime = published_runtime(runtime or RuntimeOptions(precision=precision or "fp32"))
        precision = None
        recipe_info.update(family=family, sampler="ddpm", aas="faithful", compat_order=LUNGDDPM_COMPAT_ORDER)
    items, record = preprocess(ct, layout, **options)
    margin = ROI_MARGIN_MM if roi_margin_mm is None else float(roi_margin_mm)
    if uses_ct(cfg.unet.layout_channels) and margin != ROI_MARGIN_MM:
        raise InputError(
            f"this model sees the real CT outside each nodule + {ROI_MARGIN_MM:g} mm, the region it was trained to "
            f"redraw; --roi-margin {margin:g} would show it another one: leave --roi-margin out"
        )
    nodules_only = cfg.spatial_mode == "roi" and margin >= 0
    wanted = {k: v for k, v in (density or {}).items() if v is not None}
    if wanted and cfg.normalization != "hu-window":
        raise InputError(
            f"density control needs a model with the hu-window intensity scale; this one uses {cfg.normalization!r} "
            "(whose HU scale changes per slice): use --density off"
        )
    t1 = time.perf_counter()
    per_patch: List[List[np.ndarray]] = []
    eta: Optional[EtaEstimator] = None  # over all patches; made when the first step says how many there are
    for index, item in enumerate(items):

        def patch_progress(info: StepInfo, index: int = index) -> None:
            nonlocal eta
            if callback is None:
                return
            done = index * info.total + info.step
            total = len(items) * info.total
            eta = eta or EtaEstimator(total, t1)
            now = time.perf_counter()
            callback(StepInfo(done, total, info.level, now - t1, eta.update(done, now)))

        known = None
        if nodules_only:
            spacing = record.patches[index].grid_geometry.spacing[::-1]  # (z, y, x), the patch is native
            near = near_nodules(from_model_order(item.layout, record.array_order), spacing, margin)
            known = to_model_order(~near, record.array_order)
        condition = item.condition(cfg.unet.layout_channels)
        if uses_ct(cfg.unet.layout_channels):
            # The model sees the real CT it keeps and what passes through the region it redraws.
            known = item.layout == 0 if known is None else known
            untyped = cfg.nodule_types[0] if cfg.nodule_types else "solid"
            condition = condition_channels(cfg.unet.layout_channels, item.layout, item.ct, ~known, untyped)
        control = None
        if wanted:
            control = _density_control(model, item, record.patches[index], known, wanted, record.array_order)
        out = sample(
            model,
            item.layout.astype(np.int64),
            item.ct,
            known_mask=known,
            condition=condition,
            sampler=sampler,
            aas=aas if aas is not None else AASConfig(),
            seeds=seeds,
            precision=precision,
            batch_size=batch_size,
            callback=patch_progress,
            should_stop=should_stop,
            runtime=runtime,
            density=control,
        )
        values = out.numpy()
        bad = [seed for seed, v in zip(seeds, values) if not np.isfinite(v).all()]
        if bad:
            raise NumericalError(
                f"the model produced NaN or infinite values (seed(s) {bad}); nothing was written. Its weights may be "
                "damaged, or the precision too low for it: try --precision fp32"
            )
        per_patch.append(list(values))
    t2 = time.perf_counter()
    region = None
    if nodules_only:
        region = near_nodules(labels, tuple(ct.GetSpacing())[::-1], margin) & layout_region(labels)
    images = [postprocess([p[k] for p in per_patch], record, ct, layout, feather_mm, region) for k in range(len(seeds))]
    t3 = time.perf_counter()
    timing = {"preprocess": t1 - t0, "sampling": t2 - t1, "postprocess": t3 - t2, "total": t3 - t0}
    regenerated = f"nodules + {margin:g} mm" if nodules_only else "layout"
    return SynthesisResult(images, list(seeds), record, timing, types, regenerated, recipe_info)


def _published_plus(
    ct: sitk.Image,
    layout: sitk.Image,
    model: DiffusionModel,
    aas: Optional[AASConfig],
    seeds: Sequence[int],
    runtime: Optional[RuntimeOptions],
    precision: Optional[str],
    callback: Optional[Callable[[StepInfo], None]],
    should_stop: Optional[Callable[[], bool]],
    types: Dict[str, Any],
    t0: float,
) -> SynthesisResult:
    """The published Lung-DDPM+ ``sample.py`` (:mod:`LungDDPMLib.recipes.plus_case`) for every seed."""
    from .recipes.published import plus_description, run_plus

    if aas is not None and (not aas.enabled or aas.blend_from is not None or aas.feather_voxels):
        raise InputError(
            "the published Lung-DDPM+ recipe fixes how the real CT enters (inversion, then a hard paste): drop "
            "--no-aas, --blend-from and --feather, or use --recipe lungddpm"
        )
    runtime = runtime or RuntimeOptions(precision=precision or "auto")
    eta: Optional[EtaEstimator] = None
    t1 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        nonlocal eta
        if callback is None:
            return
        now = time.perf_counter()
        eta = eta or EtaEstimator(total, t1)
        callback(StepInfo(done, total, -1, now - t1, eta.update(done, now)))

    images, cubes, sampling_s = run_plus(ct, layout, model, list(seeds), runtime, progress, should_stop)
    t3 = time.perf_counter()
    timing = {"preprocess": t1 - t0, "sampling": sampling_s, "postprocess": t3 - t1 - sampling_s, "total": t3 - t0}
    size = int(model.config.grid[0])
    info = {**plus_description(size), "cubes": cubes}
    return SynthesisResult(images, list(seeds), None, timing, types, f"the {size}^3 cube (published)", info)
