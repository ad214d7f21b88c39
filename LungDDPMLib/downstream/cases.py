"""The cases of the downstream experiment: real, validation and test phantoms, and the cached synthetic cases.

Seeds and the layouts of each set are described in :mod:`LungDDPMLib.downstream.design`. Synthetic cases are made
once per model and synthesis setting and cached on disk (one CT and one layout file per layout seed, the CT written
last, so a pair is complete only when both exist); the arms and the chunks of the design read them back.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from .data import Case, make_case
from .design import held_out_specs, synthetic_source

#: Bumped whenever what decides a synthetic case changes, so an old cache is never read as a new one.
CACHE_VERSION = 2


def _phantom(config: Any, seed: int, nodules: Any) -> Any:
    from ..phantom import make_phantom

    return make_phantom(config.phantom_size, config.phantom_spacing, seed=seed, nodules=nodules)


def _fits(layout: Any, patch_zyx: Tuple[int, ...]) -> bool:
    import SimpleITK as sitk

    from ..data.spatial import fits_roi_patch

    return fits_roi_patch(sitk.GetArrayViewFromImage(layout), patch_zyx)


def make_test_phantom(config: Any, seed: int, index: int = 0, patch_zyx: Optional[Tuple[int, ...]] = None) -> Any:
    """Phantom ``seed``, the ``index``-th of its set, with ``config.test_nodules`` nodules whose classes and size
    bins follow :func:`~LungDDPMLib.downstream.design.held_out_specs`; redrawn (same classes and bins) until they fit
    the lungs (and with ``patch_zyx`` each fits such a patch). Used for the test and the validation phantoms."""
    rng = np.random.default_rng([seed, 17])
    for _ in range(40):
        specs = held_out_specs(index, config.test_nodules, rng)
        try:
            ph = _phantom(config, seed, specs)
        except InputError:  # a drawn nodule did not fit this lung: draw again
            continue
        if patch_zyx is None or _fits(ph.layout, patch_zyx):
            return ph
    raise InputError(f"could not place {config.test_nodules} test nodules in phantom {seed}; use fewer per phantom")


def synthetic_layout(config: Any, index: int, patch_zyx: Optional[Tuple[int, ...]]) -> Tuple[Any, int, int]:
    """Synthetic case ``index``: real phantom ``index mod n_real`` with new random nodules, redrawn until every
    nodule fits ``patch_zyx`` (``roi`` mode). Returns the phantom (its CT is the real anatomy), the real seed it
    shares and the layout seed."""
    from ..phantom.nodules import random_specs

    real, layout_seed = synthetic_source(index, config.n_real, config.real_seed, config.synthetic_seed)
    rng = np.random.default_rng([layout_seed, 23])
    for _ in range(30):
        try:
            ph = _phantom(config, real, random_specs(config.nodules, rng))
        except InputError:
            continue
        if patch_zyx is None or _fits(ph.layout, patch_zyx):
            return ph, real, layout_seed
    raise InputError(f"could not draw nodules that fit the model's patch for synthetic case {index}")


def load_model(config: Any, model: Any, device: Any) -> Tuple[Any, Dict[str, Any]]:
    """The diffusion model (given, or loaded from the checkpoint / the bundled model of the mode) and what it is."""
    from ..checkpoint import file_sha256, load_checkpoint
    from ..registry import ROI_FILE, model_file

    if model is not None:
        info = {"source": "object passed to run_downstream", "preset": model.config.preset}
        return model.to(device), {**info, "sha256": None}
    # The design's synthetic cases are the teacher's (DPM-Solver++ 20): the bundled student is not its default, so
    # the cached cases and finished runs stay valid when the default of roi mode changes.
    path = ROI_FILE if not config.checkpoint and config.mode == "roi" else model_file(config.checkpoint, config.mode)
    if not path.is_file():
        what = "checkpoint" if config.checkpoint else f"bundled {config.mode} model"
        raise InputError(f"{what} not found: {path} (pass an existing .pt file)")
    ckpt = load_checkpoint(path, map_location=device)
    info = {"source": "checkpoint" if config.checkpoint else f"bundled {config.mode} model", "path": str(path)}
    info.update(sha256=file_sha256(path), preset=ckpt.config.preset, grid=list(ckpt.config.grid), step=ckpt.step)
    return ckpt.model, info


def cache_dir(config: Any, model_info: Dict[str, Any], patch: Optional[Tuple[int, ...]] = None) -> Optional[Path]:
    """One folder per model and synthesis setting: everything that decides a synthetic case is in its name (not
    ``n_real``: a case is keyed by its anatomy and layout seeds, so 4 and 8 real cases share theirs). Phantom-drawn
    cases have no model, so their name holds what shapes their layouts instead: ``patch``, the ROI patch every
    nodule is redrawn to fit (``None`` in full mode; see :func:`synthetic_layout`)."""
    root = config.cache or (str(Path(config.out) / "synthetic-cache") if config.out else None)
    if root is not None and config.synthetic_source == "phantom":
        key = {
            "source": "phantom",
            "patch": list(patch) if patch is not None else None,
            "phantom": [list(config.phantom_size), list(config.phantom_spacing), config.nodules],
            "seeds": [config.real_seed, config.synthetic_seed],
            "version": CACHE_VERSION,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(root) / f"phantom-drawn-{digest}"
    if root is None or not model_info.get("sha256"):
        return None
    key = {
        "model": model_info["sha256"],
        "types": config.types,
        "density": config.density,
        "sampler": [config.sampler, config.sampler_steps],
        "phantom": [list(config.phantom_size), list(config.phantom_spacing), config.nodules],
        "seeds": [config.real_seed, config.synthetic_seed],
        "version": CACHE_VERSION,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / digest


def phantom_dir(config: Any) -> Optional[Path]:
    """Where the real, validation and test phantoms of a setting are cached (beside the synthetic cases): every
    chunk of the design reads them instead of generating 28 phantoms again."""
    root = config.cache or (str(Path(config.out) / "synthetic-cache") if config.out else None)
    if root is None:
        return None
    key = {
        "phantom": [list(config.phantom_size), list(config.phantom_spacing), config.nodules, config.test_nodules],
        "seeds": [config.real_seed, config.validation_seed, config.test_seed],
        "version": CACHE_VERSION,
    }
    return Path(root) / ("phantoms-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16])


def _cached_phantom(folder: Optional[Path], name: str, make: Callable[[], Any]) -> Tuple[Any, Any]:
    """(CT, layout) of a phantom: read from ``folder``, or made and written there (the CT last)."""
    from ..data.io import read_image, write_image

    if folder is None:
        ph = make()
        return ph.ct, ph.layout
    ct_path, layout_path = folder / f"{name}_ct.nrrd", folder / f"{name}_layout.nrrd"
    if ct_path.is_file() and layout_path.is_file():
        return read_image(ct_path), read_image(layout_path)
    ph = make()
    folder.mkdir(parents=True, exist_ok=True)
    write_image(ph.layout, layout_path)
    write_image(ph.ct, ct_path)
    return ph.ct, ph.layout


def layout_patch(model: Any) -> Optional[Tuple[int, ...]]:
    """The patch every synthetic layout's nodules must fit: the ROI model's grid (``None`` in full mode)."""
    return tuple(model.config.grid) if model.config.spatial_mode == "roi" else None


def make_synthetic(config: Any, model: Any, index: int, cache: Optional[Path]) -> Tuple[Case, Dict[str, Any]]:
    """Synthetic case ``index``: from the cache, or made now (and cached)."""
    from ..data.io import read_image, write_image

    real, seed = synthetic_source(index, config.n_real, config.real_seed, config.synthetic_seed)
    paths = (cache / f"synthetic{seed}_ct.nrrd", cache / f"synthetic{seed}_layout.nrrd") if cache else None
    if paths and all(p.is_file() for p in paths):
        ct, layout = (read_image(p) for p in paths)
        return make_case(ct, layout, "synthetic", seed), {"seed": seed, "anatomy_of_real_seed": real, "cached": True}
    t = time.perf_counter()
    ph, real, seed = synthetic_layout(config, index, layout_patch(model))
    # the ablation's perfect model draws the layout as the phantom generator does: the phantom's own CT
    image = ph.ct if config.synthetic_source == "phantom" else _model_drawn(config, model, ph, seed)
    if paths:
        write_image(ph.layout, paths[1])
        write_image(image, paths[0])  # the CT last: a pair is complete only when both exist
    info = {
        "seed": seed,
        "anatomy_of_real_seed": real,
        "nodules": [{k: n[k] for k in ("kind", "shape", "diameter_mm")} for n in ph.info["nodules"]],
        "seconds": round(time.perf_counter() - t, 2),
        "cached": False,
    }
    return make_case(image, ph.layout, "synthetic", seed), info


def _model_drawn(config: Any, model: Any, ph: Any, seed: int) -> Any:
    """The diffusion model's drawing of phantom ``ph``'s nodules (and margin) into its CT."""
    from ..data.nodule_types import retype_image
    from ..nodule_density import resolve_density
    from ..sampling import SamplerConfig
    from ..synthesis import synthesize_case

    layout = ph.layout
    if config.types == "off":  # the model is not told the classes; the target mask is the same
        layout = retype_image(ph.layout, None)
    sampler = SamplerConfig(config.sampler, steps=config.sampler_steps)
    density = resolve_density(config.density, model.config)
    return synthesize_case(ph.ct, layout, model, sampler=sampler, seeds=[seed], density=density).images[0]


def build_cases(
    config: Any, model: Any, model_info: Dict[str, Any], log: Callable[[str], None]
) -> Tuple[Dict[str, List[Case]], Dict[str, Any]]:
    """Real, validation, test and synthetic cases, and what making them took."""
    cases: Dict[str, List[Case]] = {"real": [], "validation": [], "test": [], "synthetic": []}
    timing: Dict[str, Any] = {}
    t0 = time.perf_counter()
    folder = phantom_dir(config)
    for seed in range(config.real_seed, config.real_seed + config.n_real):
        ct, layout = _cached_phantom(folder, f"real{seed}", lambda s=seed: _phantom(config, s, config.nodules))
        cases["real"].append(make_case(ct, layout, "real", seed))
    for kind, first, count in (
        ("validation", config.validation_seed, config.n_validation),
        ("test", config.test_seed, config.n_test),
    ):
        for i, seed in enumerate(range(first, first + count)):
            ct, layout = _cached_phantom(folder, f"{kind}{seed}", lambda s=seed, i=i: make_test_phantom(config, s, i))
            cases[kind].append(make_case(ct, layout, kind, seed))
    timing["phantoms"] = time.perf_counter() - t0
    log(
        f"  {config.n_real} real, {config.n_validation} validation and {config.n_test} test phantoms in "
        f"{timing['phantoms']:.0f} s"
    )
    cache = cache_dir(config, model_info, layout_patch(model))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    made = []
    t1 = time.perf_counter()
    for i in range(config.n_synthetic):
        case, info = make_synthetic(config, model, i, cache)
        cases["synthetic"].append(case)
        made.append(info)
        how = "from the cache" if info["cached"] else f"in {info['seconds']} s"
        log(f"  synthetic case {i + 1}/{config.n_synthetic} (layout seed {info['seed']}) {how}")
    timing["synthetic"] = time.perf_counter() - t1
    return cases, {"timing": timing, "synthetic_cases": made, "cache": str(cache) if cache else None}
