"""How faithful is a synthetic CT? Per-region metrics in a table node and HU histograms in a plot chart.

Regions: lung (layout 1), nodule (layout 2), generated (lung + nodule) and kept (everything else; with AAS
it equals the input, so its errors are 0). Metrics per region and sample: MSE, MAE, PSNR (data range 2000 HU,
the -1000..1000 HU window), SSIM computed once over the region's voxels (global means, variances and
covariance; no sliding window, so it needs no extra package) and real/synthetic HU mean and SD.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import slicer
import vtk

DATA_RANGE_HU = 2000.0
REGIONS = ("lung", "nodule", "generated", "kept")
METRIC_COLUMNS = (
    "voxels",
    "MSE (HU^2)",
    "MAE (HU)",
    "PSNR (dB)",
    "SSIM",
    "real mean (HU)",
    "real SD (HU)",
    "synthetic mean (HU)",
    "synthetic SD (HU)",
)
HISTOGRAM_BINS = np.arange(-1100.0, 600.0 + 1e-9, 20.0)


def region_masks(layout: np.ndarray) -> Dict[str, np.ndarray]:
    return {"lung": layout == 1, "nodule": layout == 2, "generated": layout > 0, "kept": layout == 0}


def region_metrics(real: np.ndarray, synthetic: np.ndarray) -> Dict[str, float]:
    """Metrics over one region's voxels (1-D arrays in HU); NaN for an empty region."""
    nan = float("nan")
    if real.size == 0:
        return dict.fromkeys(METRIC_COLUMNS, nan) | {"voxels": 0.0}
    a, b = real.astype(np.float64), synthetic.astype(np.float64)
    diff = b - a
    mse = float(np.mean(diff**2))
    c1, c2 = (0.01 * DATA_RANGE_HU) ** 2, (0.03 * DATA_RANGE_HU) ** 2
    ma, mb = a.mean(), b.mean()
    cov = float(np.mean((a - ma) * (b - mb)))
    ssim = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (a.var() + b.var() + c2))
    return {
        "voxels": float(a.size),
        "MSE (HU^2)": mse,
        "MAE (HU)": float(np.mean(np.abs(diff))),
        "PSNR (dB)": float("inf") if mse == 0 else float(10 * np.log10(DATA_RANGE_HU**2 / mse)),
        "SSIM": float(ssim),
        "real mean (HU)": float(ma),
        "real SD (HU)": float(a.std()),
        "synthetic mean (HU)": float(mb),
        "synthetic SD (HU)": float(b.std()),
    }


def metrics_rows(real: np.ndarray, synthetics: Sequence[np.ndarray], layout: np.ndarray) -> List[Dict[str, Any]]:
    """One row per (sample, region) with every metric."""
    rows = []
    masks = region_masks(layout)
    for k, synthetic in enumerate(synthetics):
        for region in REGIONS:
            m = masks[region]
            rows.append({"sample": k, "region": region, **region_metrics(real[m], synthetic[m])})
    return rows


def _column(array: Any, name: str, values: Sequence[Any]) -> Any:
    """A named VTK column filled with ``values`` (vtkTable needs columns of equal length when added)."""
    array.SetName(name)
    for v in values:
        array.InsertNextValue(v)
    return array


def add_metrics_table(name: str, rows: Sequence[Dict[str, Any]]) -> Any:
    """A table node with a row per (sample, region) and a column per metric."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    table.AddColumn(_column(vtk.vtkIntArray(), "sample", [int(r["sample"]) for r in rows]))
    table.AddColumn(_column(vtk.vtkStringArray(), "region", [str(r["region"]) for r in rows]))
    for column in METRIC_COLUMNS:
        table.AddColumn(_column(vtk.vtkDoubleArray(), column, [float(r[column]) for r in rows]))
    table.Modified()
    node.Modified()
    return node


def histogram(values: np.ndarray) -> np.ndarray:
    """Fraction of the region's voxels per 20 HU bin (so regions of any size compare)."""
    counts, _ = np.histogram(np.clip(values, HISTOGRAM_BINS[0], HISTOGRAM_BINS[-1]), bins=HISTOGRAM_BINS)
    return counts / max(1, values.size)


def add_histogram_plot(name: str, real: np.ndarray, synthetics: Sequence[np.ndarray], layout: np.ndarray) -> List[Any]:
    """HU histograms, real against each synthetic sample, per generated region: [table, chart, *series]."""
    masks = region_masks(layout)
    table_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} data")
    table = table_node.GetTable()
    centres = (HISTOGRAM_BINS[:-1] + HISTOGRAM_BINS[1:]) / 2
    columns: Dict[str, np.ndarray] = {"HU": centres}
    for region in ("lung", "nodule"):
        if not masks[region].any():
            continue
        columns[f"{region} real"] = histogram(real[masks[region]])
        for k, synthetic in enumerate(synthetics):
            columns[f"{region} synthetic {k}"] = histogram(synthetic[masks[region]])
    for column, values in columns.items():
        table.AddColumn(_column(vtk.vtkDoubleArray(), column, [float(v) for v in values]))
    table.Modified()
    chart = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle("HU histograms: real against synthetic")
    chart.SetXAxisTitle("HU")
    chart.SetYAxisTitle("fraction of region voxels")
    series_nodes = []
    for column in (c for c in columns if c != "HU"):
        series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("HU")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        if "real" not in column:
            series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
        series.SetUniqueColor()
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        series_nodes.append(series)
    return [table_node, chart, *series_nodes]
