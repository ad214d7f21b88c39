"""One evaluation of synthetic CTs against real ones: paired metrics, set metrics, diversity, and the report files.

The CLI (``lungddpm evaluate``), the demo and the Slicer module call the same functions here, so a number means
the same thing wherever it is shown:

* :func:`evaluate_pair` - paired per-region metrics (:mod:`.paired`) plus the layout fidelity and seam score
  (:mod:`.fidelity`) for one synthetic CT against its real CT and layout;
* :func:`evaluate_files` - all of it over files matched by :mod:`.matching`, including diversity between
  samples of the same layout, summarised per kind of run (:mod:`.runs`: mode, model, sampler and steps from each
  output's provenance), never pooled across kinds;
* :func:`run_evaluation` - ``metrics.json`` (everything), ``metrics.csv`` (one row per pair and region),
  ``histograms.csv`` and PNG figures. Files are staged and moved into place, ``metrics.json`` last, so a folder
  with a ``metrics.json`` is a complete report.

The set-metric rules live in :mod:`.set_report`, the CSV tables and strict JSON in :mod:`.report_files`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..data.io import Geometry, read_ct
from ..data.layout import load_layout
from ..data.validation import DataWarning, check_ct_intensities
from ..errors import InputError
from .features import FeatureExtractor, make_extractor
from .fidelity import layout_fidelity
from .figures import comparison_montage, histogram_figure, region_histograms
from .matching import Pairing, case_key, expand, layout_for, match
from .paired import METRICS, REGIONS, paired_metrics, region_masks
from .report_files import json_safe, write_tables
from .runs import group_by_kind, kind_label
from .set_metrics import diversity
from .set_report import SET_MODES, VolumeItem, check_unit, set_metrics_note, set_result, set_size_check, unit_features

__all__ = ["GEOMETRY_MODES", "SET_MODES", "evaluate_files", "evaluate_pair", "json_safe", "read_synthetic",
           "run_evaluation", "set_metrics_note"]  # fmt: skip
GEOMETRY_MODES = ("refuse", "resample")
Log = Callable[[str], None]


def evaluate_pair(
    real_hu: np.ndarray, synthetic_hu: np.ndarray, layout: Optional[np.ndarray], spacing_zyx: Sequence[float]
) -> Dict[str, Any]:
    """Paired metrics per region and (with a layout) layout fidelity; arrays ``(z, y, x)`` on one grid."""
    lay = layout if layout is not None else np.zeros(real_hu.shape, dtype=np.uint8)
    out: Dict[str, Any] = {"regions": paired_metrics(real_hu, synthetic_hu, lay)}
    if layout is not None:
        fid = layout_fidelity(real_hu, synthetic_hu, layout, spacing_zyx)
        if isinstance(fid.get("seam_score"), float) and math.isnan(fid["seam_score"]):
            fid["seam_score"] = None  # no boundary: not applicable
        out["fidelity"] = fid
    return out


def read_synthetic(path: Any) -> sitk.Image:
    """Read a synthetic CT, refusing NaN/inf voxels with a message about the synthetic file.

    The generic CT check would call it "the CT" and advise fixing it "before synthesis", pointing the user at
    their input when the broken file is the output of a model.
    """
    image = read_ct(path, check_intensities=False)
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(
                f"the synthetic CT {path} has {bad:,} NaN or infinite voxels (of {array.size:,}); it is not a usable "
                "result - regenerate it (a model with non-finite weights is refused when loaded) or leave it out"
            )
    check_ct_intensities(image, f"the synthetic CT {path}")
    return image


def _load_pair(pair: Dict[str, Optional[Path]], geometry: str, log: Log, auto_lung: str = "never") -> Dict[str, Any]:
    real_img = read_ct(pair["real"])
    synth_img = read_synthetic(pair["synthetic"])
    g_real, g_syn = Geometry.of(real_img), Geometry.of(synth_img)
    resampled = False
    if not g_real.matches(g_syn):
        if geometry == "refuse":
            raise InputError(
                f"{pair['synthetic']} is not on the grid of {pair['real']}: synthetic {g_syn.describe()}, "
                f"real {g_real.describe()}; pass --geometry resample to resample the synthetic CT onto the real grid"
            )
        log(f"resampling {Path(str(pair['synthetic'])).name} onto the grid of {Path(str(pair['real'])).name}")
        synth_img = sitk.Resample(synth_img, real_img, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
        resampled = True
    layout = None
    if pair.get("layout") is not None:
        with warnings.catch_warnings():  # "the synthesis will have no nodule" is about synthesis, not evaluation
            warnings.simplefilter("ignore", DataWarning)
            layout = sitk.GetArrayFromImage(load_layout(pair["layout"], real_img, auto_lung=auto_lung))
    sx, sy, sz = real_img.GetSpacing()
    return {
        "real": sitk.GetArrayFromImage(real_img).astype(np.float32),
        "synthetic": sitk.GetArrayFromImage(synth_img).astype(np.float32),
        "layout": layout,
        "spacing": (sz, sy, sx),
        "resampled": resampled,
    }


def _mean_regions(pairs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Optional[float]]]:
    """Mean of each metric over pairs per region, skipping pairs where it is not applicable."""
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for region in REGIONS:
        out[region] = {}
        for metric in METRICS:
            vals = [p["regions"][region][metric] for p in pairs if p["regions"][region][metric] is not None]
            finite = [v for v in vals if math.isfinite(v)]
            if not vals:
                out[region][metric] = None
            elif len(finite) < len(vals):
                out[region][metric] = float("inf")  # e.g. PSNR of identical regions
            else:
                out[region][metric] = float(np.mean(finite))
    return out


class _Accumulator:
    """Running state of :func:`evaluate_files`: per-pair rows, and per run group the summed histograms, the
    synthetic features and the diversity (the real features are one reference set for every group)."""

    def __init__(self, extractor: Optional[FeatureExtractor], unit: str) -> None:
        self.extractor = extractor
        self.unit = unit
        self.rows: List[Dict[str, Any]] = []
        self.histograms: Dict[int, Dict[str, Dict[str, np.ndarray]]] = {}
        self.real_features: Dict[str, np.ndarray] = {}
        self.synthetic_features: Dict[int, List[np.ndarray]] = {}
        self.diversity: Dict[int, Dict[str, Any]] = {}

    def features(self, hu: np.ndarray, spacing: Sequence[float], mask: Optional[np.ndarray]) -> np.ndarray:
        if self.extractor is None:
            return np.zeros((0, 0))
        return unit_features(self.extractor, (hu, spacing, mask), self.unit)

    def add_histograms(self, group: int, real: np.ndarray, synthetic: np.ndarray, masks: Dict[str, np.ndarray]) -> None:
        for region, h in region_histograms(real, synthetic, masks).items():
            if h is not None:
                acc = self.histograms.setdefault(group, {}).setdefault(
                    region, {k: np.zeros_like(v) for k, v in h.items()}
                )
                for k in acc:
                    acc[k] = acc[k] + h[k]


def _pair_figures(d: Dict[str, Any], masks: Dict[str, np.ndarray], folder: Path, stem: str, pair: Dict) -> List[str]:
    """Montage and per-region HU histograms of one pair; returns the file names written (relative to the report)."""
    names = [f"figures/{stem}_montage.png"]
    sample = Path(str(pair["synthetic"])).name
    comparison_montage(d["real"], d["synthetic"], d["layout"], d["spacing"], folder / f"{stem}_montage.png",
                       case=case_key(Path(str(pair["real"]))), sample=sample)  # fmt: skip
    hist = histogram_figure(
        region_histograms(d["real"], d["synthetic"], masks), folder / f"{stem}_histograms.png", sample
    )
    if hist is not None:
        names.append(f"figures/{stem}_histograms.png")
    return names


def _item(
    path: Path, layout: Optional[Path] = None, read: Callable[[Any], sitk.Image] = read_ct, auto_lung: str = "never"
) -> VolumeItem:
    """A real or synthetic file as extractor input; with a layout, masked to its generated region."""
    img = read(path)
    sx, sy, sz = img.GetSpacing()
    mask = None
    if layout is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            gen = sitk.GetArrayFromImage(load_layout(layout, img, auto_lung=auto_lung)) > 0
        mask = gen if gen.any() else None
    return sitk.GetArrayFromImage(img).astype(np.float32), (sz, sy, sx), mask


def evaluate_files(
    real: Sequence[str],
    synthetic: Sequence[str],
    layouts: Sequence[str] = (),
    *,
    geometry: str = "refuse",
    extractor: str = "radiomic",
    weights: Optional[str] = None,
    set_mode: str = "auto",
    set_unit: str = "volume",
    device: str = "cpu",
    auto_lung: str = "never",
    figures_dir: Optional[Path] = None,
    figures_for: int = 8,
    log: Log = lambda message: None,
) -> Dict[str, Any]:
    """Everything ``lungddpm evaluate`` reports, as one JSON-ready dict (plus ``_histograms``, summed counts per
    run group).

    Synthetic CTs from different kinds of run (mode, model, sampler, steps; :mod:`.runs`) are summarised apart:
    ``groups`` holds each kind's summary, set metrics (against all real CTs) and diversity, and the top-level
    ``summary``, ``set_metrics`` and ``diversity`` are those of the only group, or with several say so instead of
    pooling them. Pairs are processed one real CT at a time, so memory holds one layout's samples, not the whole
    set; the figures of the first ``figures_for`` pairs are written to ``figures_dir`` as they are computed.
    ``auto_lung`` reads the layouts as the synthesis did (``--auto-lung``: a layout of nodules alone).
    """
    if geometry not in GEOMETRY_MODES:
        raise InputError(f"geometry must be one of {GEOMETRY_MODES}, got {geometry!r}")
    start = time.perf_counter()
    real_files = expand(real, "real")
    synth_files = expand(synthetic, "synthetic")
    layout_files = expand(layouts, "layout") if layouts else []
    pairing: Pairing = match(real_files, synth_files, layout_files)
    log(f"{len(real_files)} real, {len(synth_files)} synthetic files; pairing: {pairing.how}")
    kinds, kind_of = group_by_kind(synth_files)
    group_of = {str(f): g for f, g in zip(synth_files, kind_of)}
    if len(kinds) > 1:
        log(f"{len(kinds)} kinds of run, summarised apart: " + "; ".join(kind_label(k) for k in kinds))
    n_real = len(real_files)  # every real CT belongs to the reference set, with samples or without
    check_unit(set_unit)
    sizes = [kind_of.count(g) for g in range(len(kinds))]
    skips = [set_size_check(n_real, n, set_mode) if set_unit == "volume" else None for n in sizes]
    if set_mode == "off":
        skips = [{"status": "not requested"} for _ in kinds]
    ex = None if all(skip is not None for skip in skips) else make_extractor(extractor, weights=weights, device=device)
    acc = _Accumulator(ex, set_unit)

    ordered = sorted(enumerate(pairing.pairs), key=lambda ip: (group_of[str(ip[1]["synthetic"])], str(ip[1]["real"])))
    samples: List[np.ndarray] = []
    for n, (i, pair) in enumerate(ordered):
        g = group_of[str(pair["synthetic"])]
        log(f"pair {n + 1}/{len(ordered)}: {Path(str(pair['synthetic'])).name} against {Path(str(pair['real'])).name}")
        d = _load_pair(pair, geometry, log, auto_lung)
        row = evaluate_pair(d["real"], d["synthetic"], d["layout"], d["spacing"])
        row.update({k: None if v is None else str(v) for k, v in pair.items()})
        row["index"], row["resampled"], row["group"] = i, d["resampled"], g
        acc.rows.append(row)
        lay = d["layout"] if d["layout"] is not None else np.zeros(d["real"].shape, np.uint8)
        masks = region_masks(lay)
        acc.add_histograms(g, d["real"], d["synthetic"], masks)
        mask = masks["generated"] if masks["generated"].any() else None
        key = str(pair["real"])
        if key not in acc.real_features:
            acc.real_features[key] = acc.features(d["real"], d["spacing"], mask)
        acc.synthetic_features.setdefault(g, []).append(acc.features(d["synthetic"], d["spacing"], mask))
        # Diversity needs every sample of one layout at once: keep only the generated voxels (float32), not volumes.
        samples.append(d["synthetic"][mask] if mask is not None else d["synthetic"].ravel())
        following = ordered[n + 1][1] if n + 1 < len(ordered) else None
        if following is None or str(following["real"]) != key or group_of[str(following["synthetic"])] != g:
            acc.diversity.setdefault(g, {})[key] = diversity(samples) if len(samples) > 1 else None
            samples = []
        if figures_dir is not None and n < figures_for:
            row["figures"] = _pair_figures(d, masks, figures_dir, f"pair{i:03d}", pair)
    acc.rows.sort(key=lambda r: r["index"])

    if acc.extractor is not None:
        if not pairing.pairs:  # unpaired sets: whole-volume features
            for f, g in zip(synth_files, kind_of):
                acc.synthetic_features.setdefault(g, []).append(acc.features(*_item(f, read=read_synthetic)))
        for f in real_files:  # real CTs without a sample still belong to the reference set
            if str(f) not in acc.real_features:
                layout = layout_for(case_key(f), f, layout_files, [case_key(r) for r in real_files])
                item = _item(f, layout if pairing.pairs else None, auto_lung=auto_lung)
                acc.real_features[str(f)] = acc.features(*item)
    groups = []
    for g, kind in enumerate(kinds):
        rows = [r for r in acc.rows if r["group"] == g]
        sets = skips[g]
        if sets is None:
            assert acc.extractor is not None
            real_f = np.concatenate(list(acc.real_features.values()))
            sets = set_result(real_f, np.concatenate(acc.synthetic_features[g]), acc.extractor, set_unit, set_mode)
            sets["feature_region"] = "generated (lung + nodule)" if pairing.pairs and layout_files else "whole volume"
        groups.append({"group": g, "kind": kind, "label": kind_label(kind), "synthetic": sizes[g], "pairs": len(rows),
                       "summary": _mean_regions(rows) if rows else None, "set_metrics": sets,
                       "diversity": acc.diversity.get(g, {})})  # fmt: skip
    one = groups[0] if len(groups) == 1 else None
    mixed = (
        f"the synthetic CTs come from {len(groups)} kinds of run ({'; '.join(x['label'] for x in groups)}); "
        "each is summarised on its own under 'groups', never pooled"
    )
    return {
        "pairing": {"how": pairing.how, "note": pairing.note, "pairs": len(pairing.pairs)},
        "pairs": acc.rows,
        "groups": groups,
        "summary": one["summary"] if one else None,
        "set_metrics": one["set_metrics"] if one else {"status": "per group", "reason": mixed},
        "diversity": one["diversity"] if one else {},
        "settings": {
            "geometry": geometry,
            "extractor": extractor,
            "weights": weights,
            "set_metrics": set_mode,
            "set_unit": set_unit,
            "auto_lung": auto_lung,
        },
        "seconds": round(time.perf_counter() - start, 2),
        "_histograms": acc.histograms,
    }


def run_evaluation(out_dir: str, log: Log = lambda message: None, **kwargs: Any) -> Dict[str, Any]:
    """:func:`evaluate_files` plus the report files in ``out_dir``; returns the report and the written paths.

    Everything is staged in a hidden folder and moved into place at the end, ``metrics.json`` last; a failure
    leaves ``out_dir`` as it was.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=out))
    try:
        (stage / "figures").mkdir()
        report = evaluate_files(figures_dir=stage / "figures", log=log, **kwargs)
        write_tables(report, stage)
        report["figures"] = []
        for entry in report["groups"]:  # one figure per run group: a histogram of a mix would describe none
            g = entry["group"]
            name = "histograms.png" if len(report["groups"]) == 1 else f"histograms_group{g}.png"
            title = "all pairs" if len(report["groups"]) == 1 else f"group {g}: {entry['label']}"
            if histogram_figure(report["_histograms"].get(g, {}), stage / "figures" / name, title) is not None:
                report["figures"].append(f"figures/{name}")
        public = {k: v for k, v in report.items() if not k.startswith("_")}
        (stage / "metrics.json").write_text(json.dumps(json_safe(public), indent=2))
        (out / "figures").mkdir(exist_ok=True)
        for pattern in ("pair*.png", "histograms_group*.png"):  # an earlier report's figures must not look like ours
            for old in (out / "figures").glob(pattern):
                old.unlink()
        for f in sorted((stage / "figures").iterdir()):
            os.replace(f, out / "figures" / f.name)
        for name in ("metrics.csv", "histograms.csv", "metrics.json"):
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    paths = {n: str(out / n) for n in ("metrics.json", "metrics.csv", "histograms.csv")}
    report["paths"] = paths
    return report
