"""How faithful is a synthetic CT? Per-region metrics in a table node and HU histograms in a plot chart.

The numbers are computed by the engine in the worker process (``lungddpm worker --metrics`` sends a ``metrics``
event, see :mod:`LungDDPMLib.gui_tasks`), because the engine's SSIM needs scikit-image, which a stock Slicer does
not have; here they only become nodes. Per region (lung, nodule, generated = lung + nodule, kept = everything
else; with AAS the kept region equals the input, so its errors are 0) and sample: MSE and MAE in HU, PSNR on the
-1000..1000 HU window, a windowed 3D SSIM, the Wasserstein-1 distance of the HU distributions, and real/synthetic
HU mean and SD. Not-applicable values (an empty region) are NaN in the table.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import slicer
import vtk

REGIONS = ("lung", "nodule", "generated", "kept")
#: Table column -> key of the engine's ``paired_metrics`` (the ``samples`` of a ``metrics`` event).
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


def metrics_rows(event: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per (sample, region) with every metric (NaN where a metric does not apply) from a metrics event."""
    rows = []
    for k, regions in enumerate(event["samples"]):
        for region in REGIONS:
            values = regions[region]
            row: Dict[str, Any] = {"sample": k, "region": region}
            for column, key in METRIC_COLUMNS.items():
                value = values.get(key)
                row[column] = float("nan") if value is None else float(value)
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


def add_histogram_plot(name: str, histograms: Dict[str, Any]) -> List[Any]:
    """HU histograms, real against each synthetic sample, per generated region: [table, chart, *series]."""
    table_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} data")
    table = table_node.GetTable()
    columns: Dict[str, Sequence[float]] = {"HU": histograms["bins_hu"]}
    for region, values in histograms["regions"].items():
        columns[f"{region} real"] = values["real"]
        for k, synthetic in enumerate(values["synthetic"]):
            columns[f"{region} synthetic {k}"] = synthetic
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


def layout_needed(table_shown: bool, plot_shown: bool, with_plot: bool) -> Optional[str]:
    """The ``vtkMRMLLayoutNode`` layout to switch to so that results are visible, or None to keep the user's.

    A table alone needs a table view; a table with a chart needs both. Switching only when a view is missing
    leaves a layout the user arranged alone.
    """
    if table_shown and (plot_shown or not with_plot):
        return None
    return "SlicerLayoutFourUpPlotTableView" if with_plot else "SlicerLayoutFourUpTableView"
