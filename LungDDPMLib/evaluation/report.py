"""One evaluation of synthetic CTs against real ones: paired metrics, set metrics, diversity, and the report files.

The CLI (``lungddpm evaluate``), the demo and the Slicer module call the same functions here, so a number means
the same thing wherever it is shown:

* :func:`evaluate_pair` - paired per-region metrics (:mod:`.paired`) plus the layout fidelity and seam score
  (:mod:`.fidelity`) for one synthetic CT against its real CT and layout;
* :func:`evaluate_files` - all of it over files matched by :mod:`.matching`, including diversity between
  samples of the same layout;
* :func:`write_report` - ``metrics.json`` (everything), ``metrics.csv`` (one row per pair and region),
  ``histograms.csv`` and PNG figures. Files are staged and moved into place, ``metrics.json`` last, so a folder
  with a ``metrics.json`` is a complete report.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..data.io import Geometry, read_ct
from ..data.layout import load_layout
from ..data.validation import DataWarning, check_ct_intensities
from ..errors import InputError
from .features import FeatureExtractor, extract_features, make_extractor
from .fidelity import layout_fidelity
from .figures import HIST_EDGES, comparison_montage, histogram_figure, region_histograms
from .matching import Pairing, case_key, expand, layout_for, match
from .paired import METRICS, REGIONS, paired_metrics, region_masks
from .patches import UNITS, patch_items
from .set_metrics import FID_MIN_SAMPLES, MMD_MIN_SAMPLES, diversity, set_metrics

GEOMETRY_MODES = ("refuse", "resample")
SET_MODES = ("auto", "on", "off")
Log = Callable[[str], None]
VolumeItem = Tuple[np.ndarray, Sequence[float], Optional[np.ndarray]]


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


def _set_size_check(
    n_real: int, n_synthetic: int, mode: str, hint: str = "; for few volumes use patches (--set-unit patch)"
) -> Optional[Dict[str, Any]]:
    """None when set metrics should be computed, else the report entry that says why not."""
    if mode not in SET_MODES:
        raise InputError(f"set metrics mode must be one of {SET_MODES}, got {mode!r}")
    if mode == "off":
        return {"status": "not requested"}
    need = max(FID_MIN_SAMPLES, MMD_MIN_SAMPLES)
    if min(n_real, n_synthetic) < need:
        reason = f"FID and MMD need at least {need} samples in each set; got {n_real} real and {n_synthetic} synthetic"
        if mode == "on":
            raise InputError(reason + hint)
        return {"status": "not applicable", "reason": reason}
    return None


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise InputError(f"set-metric unit must be one of {UNITS}, got {unit!r}")


def _unit_features(ex: FeatureExtractor, item: VolumeItem, unit: str) -> np.ndarray:
    """(k, dim) features: one row for a volume, one per patch of the mask (possibly none) in patch mode."""
    if unit == "volume":
        return extract_features([item], ex)
    rows = extract_features(patch_items(*item), ex)
    return rows if len(rows) else np.zeros((0, ex.dim))


def _set_result(real: np.ndarray, synthetic: np.ndarray, ex: FeatureExtractor, unit: str, mode: str) -> Dict[str, Any]:
    if unit == "patch":  # the number of patches is only known now
        hint = "; the generated region holds too few 40 mm patches (at least half inside it): use more volumes"
        skip = _set_size_check(len(real), len(synthetic), mode, hint)
        if skip is not None:
            return {**skip, "unit": unit}
    result = dict(set_metrics(real, synthetic, standardize=not ex.comparable_with_paper))
    result.update(
        {"status": "ok", "extractor": ex.name, "comparable_with_paper": ex.comparable_with_paper, "unit": unit}
    )
    note = set_metrics_note(result)
    if note:
        result["note"] = note
    return result


def set_metrics_note(result: Dict[str, Any]) -> str:
    """What a reader must know before quoting FID/MMD^2; the same words go to metrics.json and the console.

    A number printed without its caveat gets quoted (``FID 0  MMD^2 -0.39`` on identical sets), so the caveat
    travels with it wherever it is shown.
    """
    parts = []
    if not result.get("fid_reliable", True):
        parts.append(
            f"FID is unreliable here: {min(result['n_real'], result['n_synthetic'])} samples per set for "
            f"{result['dim']} features (it needs more samples than features; use more volumes or --set-unit patch)"
        )
    if result.get("mmd2", 0.0) < 0:
        parts.append("MMD^2 below 0 is sampling noise of its unbiased estimate: no detectable difference")
    return "; ".join(parts)


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


def _load_pair(pair: Dict[str, Optional[Path]], geometry: str, log: Log) -> Dict[str, Any]:
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
            layout = sitk.GetArrayFromImage(load_layout(pair["layout"], real_img, auto_lung="never"))
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
    """Running state of :func:`evaluate_files`: per-pair rows, summed histograms, features and diversity."""

    def __init__(self, extractor: Optional[FeatureExtractor], unit: str) -> None:
        self.extractor = extractor
        self.unit = unit
        self.rows: List[Dict[str, Any]] = []
        self.histograms: Dict[str, Dict[str, np.ndarray]] = {}
        self.real_features: Dict[str, np.ndarray] = {}
        self.synthetic_features: List[np.ndarray] = []
        self.diversity: Dict[str, Any] = {}

    def features(self, hu: np.ndarray, spacing: Sequence[float], mask: Optional[np.ndarray]) -> np.ndarray:
        if self.extractor is None:
            return np.zeros((0, 0))
        return _unit_features(self.extractor, (hu, spacing, mask), self.unit)

    def add_histograms(self, real: np.ndarray, synthetic: np.ndarray, masks: Dict[str, np.ndarray]) -> None:
        for region, h in region_histograms(real, synthetic, masks).items():
            if h is not None:
                acc = self.histograms.setdefault(region, {k: np.zeros_like(v) for k, v in h.items()})
                for k in acc:
                    acc[k] = acc[k] + h[k]


def _pair_figures(d: Dict[str, Any], masks: Dict[str, np.ndarray], folder: Path, stem: str, title: str) -> List[str]:
    """Montage and per-region HU histograms of one pair; returns the file names written (relative to the report)."""
    names = [f"figures/{stem}_montage.png"]
    comparison_montage(d["real"], d["synthetic"], d["layout"], d["spacing"], folder / f"{stem}_montage.png")
    hist = histogram_figure(
        region_histograms(d["real"], d["synthetic"], masks), folder / f"{stem}_histograms.png", title
    )
    if hist is not None:
        names.append(f"figures/{stem}_histograms.png")
    return names


def _item(path: Path, layout: Optional[Path] = None, read: Callable[[Any], sitk.Image] = read_ct) -> VolumeItem:
    """A real or synthetic file as extractor input; with a layout, masked to its generated region."""
    img = read(path)
    sx, sy, sz = img.GetSpacing()
    mask = None
    if layout is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            gen = sitk.GetArrayFromImage(load_layout(layout, img, auto_lung="never")) > 0
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
    figures_dir: Optional[Path] = None,
    figures_for: int = 8,
    log: Log = lambda message: None,
) -> Dict[str, Any]:
    """Everything ``lungddpm evaluate`` reports, as one JSON-ready dict (plus ``_histograms``, summed counts).

    Pairs are processed one real CT at a time, so memory holds one layout's samples, not the whole set; the
    figures of the first ``figures_for`` pairs are written to ``figures_dir`` as they are computed.
    """
    if geometry not in GEOMETRY_MODES:
        raise InputError(f"geometry must be one of {GEOMETRY_MODES}, got {geometry!r}")
    start = time.perf_counter()
    real_files = expand(real, "real")
    synth_files = expand(synthetic, "synthetic")
    layout_files = expand(layouts, "layout") if layouts else []
    pairing: Pairing = match(real_files, synth_files, layout_files)
    log(f"{len(real_files)} real, {len(synth_files)} synthetic files; pairing: {pairing.how}")
    n_real = len(real_files)  # every real CT belongs to the reference set, with samples or without
    _check_unit(set_unit)
    set_skip = _set_size_check(n_real, len(synth_files), set_mode) if set_unit == "volume" else None
    if set_mode == "off":
        set_skip = {"status": "not requested"}
    ex = None if set_skip else make_extractor(extractor, weights=weights, device=device)
    acc = _Accumulator(ex, set_unit)

    ordered = sorted(enumerate(pairing.pairs), key=lambda ip: str(ip[1]["real"]))
    group: List[np.ndarray] = []
    for n, (i, pair) in enumerate(ordered):
        log(f"pair {n + 1}/{len(ordered)}: {Path(str(pair['synthetic'])).name} against {Path(str(pair['real'])).name}")
        d = _load_pair(pair, geometry, log)
        row = evaluate_pair(d["real"], d["synthetic"], d["layout"], d["spacing"])
        row.update({k: None if v is None else str(v) for k, v in pair.items()})
        row["index"], row["resampled"] = i, d["resampled"]
        acc.rows.append(row)
        lay = d["layout"] if d["layout"] is not None else np.zeros(d["real"].shape, np.uint8)
        masks = region_masks(lay)
        acc.add_histograms(d["real"], d["synthetic"], masks)
        mask = masks["generated"] if masks["generated"].any() else None
        key = str(pair["real"])
        if key not in acc.real_features:
            acc.real_features[key] = acc.features(d["real"], d["spacing"], mask)
        acc.synthetic_features.append(acc.features(d["synthetic"], d["spacing"], mask))
        # Diversity needs every sample of one layout at once: keep only the generated voxels (float32), not volumes.
        group.append(d["synthetic"][mask] if mask is not None else d["synthetic"].ravel())
        last = n + 1 == len(ordered) or str(ordered[n + 1][1]["real"]) != key
        if last:
            acc.diversity[key] = diversity(group) if len(group) > 1 else None
            group = []
        if figures_dir is not None and n < figures_for:
            row["figures"] = _pair_figures(d, masks, figures_dir, f"pair{i:03d}", Path(str(pair["synthetic"])).name)
    acc.rows.sort(key=lambda r: r["index"])

    if acc.extractor is not None:
        if not pairing.pairs:  # unpaired sets: whole-volume features
            acc.synthetic_features = [acc.features(*_item(f, read=read_synthetic)) for f in synth_files]
        for f in real_files:  # real CTs without a sample still belong to the reference set
            if str(f) not in acc.real_features:
                layout = layout_for(case_key(f), f, layout_files, [case_key(r) for r in real_files])
                acc.real_features[str(f)] = acc.features(*_item(f, layout if pairing.pairs else None))
    if set_skip is not None:
        sets = set_skip
    else:
        assert acc.extractor is not None
        real_f, synth_f = np.concatenate(list(acc.real_features.values())), np.concatenate(acc.synthetic_features)
        sets = _set_result(real_f, synth_f, acc.extractor, set_unit, set_mode)
        sets["feature_region"] = "generated (lung + nodule)" if pairing.pairs and layout_files else "whole volume"
    return {
        "pairing": {"how": pairing.how, "note": pairing.note, "pairs": len(pairing.pairs)},
        "pairs": acc.rows,
        "summary": _mean_regions(acc.rows) if acc.rows else None,
        "set_metrics": sets,
        "diversity": acc.diversity,
        "settings": {
            "geometry": geometry,
            "extractor": extractor,
            "weights": weights,
            "set_metrics": set_mode,
            "set_unit": set_unit,
        },
        "seconds": round(time.perf_counter() - start, 2),
        "_histograms": acc.histograms,
    }


def _csv_value(v: Any) -> Any:
    if v is None:
        return "NA"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


def json_safe(obj: Any) -> Any:
    """inf -> the string "inf" (JSON has no infinity); numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else None)
    return obj


def _write_tables(report: Dict[str, Any], folder: Path) -> None:
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pair", "real", "synthetic", "layout", "region", *METRICS])
        for row in report["pairs"]:
            for region in REGIONS:
                m = row["regions"][region]
                w.writerow([row["index"], row["real"], row["synthetic"], row["layout"], region]
                           + [_csv_value(m[k]) for k in METRICS])  # fmt: skip
    edges = HIST_EDGES
    with open(folder / "histograms.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["region", "hu_from", "hu_to", "real_voxels", "synthetic_voxels"])
        for region, h in report["_histograms"].items():
            for k in range(len(edges) - 1):
                w.writerow([region, edges[k], edges[k + 1], int(h["real"][k]), int(h["synthetic"][k])])


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
        _write_tables(report, stage)
        hist = histogram_figure(report["_histograms"], stage / "figures" / "histograms.png", "all pairs")
        report["figures"] = ["figures/histograms.png"] if hist is not None else []
        public = {k: v for k, v in report.items() if not k.startswith("_")}
        (stage / "metrics.json").write_text(json.dumps(json_safe(public), indent=2))
        (out / "figures").mkdir(exist_ok=True)
        for old in (out / "figures").glob("pair*.png"):  # an earlier report's figures must not look like ours
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
