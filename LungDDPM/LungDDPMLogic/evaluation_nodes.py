"""How faithful is a synthetic CT? Per-region metrics in a table node and HU histograms in a plot chart.

The numbers come from the engine's :func:`LungDDPMLib.evaluation.paired_metrics` (one definition for the CLI, the
demo and this module): per region (lung, nodule, generated = lung + nodule, kept = everything else; with AAS the
kept region equals the input, so its errors are 0) and sample, MSE and MAE in HU, PSNR on the -1000..1000 HU window,
a windowed 3D SSIM, the Wasserstein-1 distance of the HU distributions, and real/synthetic HU mean and SD.
Not-applicable values (an empty region) are NaN in the table.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import slicer
import vtk

REGIONS = ("lung", "nodule", "generated", "kept")
#: Table column -> key of :func:`LungDDPMLib.evaluation.paired_metrics`.
METRIC_COLUMNS = {
    "voxels": "voxels",
    "MSE (HU^2)": "mse_hu",
    "MAE (HU)": "mae_hu",
    "PSNR (dB)": "psnr_db",
    "SSIM": "ssim",
    "W1 (HU)": "w1_hu",
    "real mean (HU)": "real_mean_hu",
    "real SD (HU)": "real_sd_hu",
    "synthetic mean (HU)": "synthetic_mean_hu",
    "synthetic SD (HU)": "synthetic_sd_hu",
}
HISTOGRAM_BINS = np.arange(-1100.0, 600.0 + 1e-9, 20.0)


def metrics_rows(real: np.ndarray, synthetics: Sequence[np.ndarray], layout: np.ndarray) -> List[Dict[str, Any]]:
    """One row per (sample, region) with every metric (NaN where a metric does not apply)."""
    from LungDDPMLib.evaluation import paired_metrics  # the engine, on sys.path via engine_path

    rows = []
    for k, synthetic in enumerate(synthetics):
        metrics = paired_metrics(real, synthetic, layout)
        for region in REGIONS:
            values = metrics[region]
            row = {"sample": k, "region": region}
            for column, key in METRIC_COLUMNS.items():
                row[column] = float("nan") if values[key] is None else float(values[key])
            rows.append(row)
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
    from LungDDPMLib.evaluation import region_masks  # one definition of the regions, the engine's

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
