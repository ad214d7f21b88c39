"""Show a run's results in Slicer's views, changing the user's view layout only when it lacks a needed view.

Why: the results used to switch the layout to four-up + plot + table on every run, and the FID/MMD table was
invisible in layouts without a table view. Now the layout changes only when no table (or, with a chart, no plot)
view is shown (:func:`~.evaluation_nodes.layout_needed`). Needs the application's layout manager, so it does
nothing headless; no ``qt`` import.
"""

from __future__ import annotations

from typing import Any, Optional

import slicer

from .evaluation_nodes import layout_needed


def _shown(layout_manager: Any, kind: str) -> bool:
    """Whether the current layout shows a ``kind`` ('table' or 'plot') view."""
    count = getattr(layout_manager, f"{kind}ViewCount", 0)
    widget = getattr(layout_manager, f"{kind}Widget")
    return any(widget(i) is not None and widget(i).isVisible() for i in range(count))


def show_in_views(table_node: Any, chart_node: Optional[Any] = None) -> None:
    """Select the table (and chart) in the table (and plot) views, switching the layout only when one is missing."""
    app = getattr(slicer, "app", None)
    layout_manager = app.layoutManager() if app is not None else None
    if layout_manager is None:
        return
    needed = layout_needed(_shown(layout_manager, "table"), _shown(layout_manager, "plot"), chart_node is not None)
    if needed is not None:
        layout_manager.setLayout(getattr(slicer.vtkMRMLLayoutNode, needed))
    app_logic = app.applicationLogic()
    selection = app_logic.GetSelectionNode()
    selection.SetActiveTableID(table_node.GetID())
    app_logic.PropagateTableSelection()
    if chart_node is not None:
        selection.SetActivePlotChartID(chart_node.GetID())
        app_logic.PropagatePlotChartSelection()


def show_results(input_volume: Any, outputs: Any) -> None:
    """Synthetic against real in the slice views; the metrics table and histogram chart when they exist."""
    if getattr(slicer, "app", None) is None:
        return
    slicer.util.setSliceViewerLayers(
        background=outputs.volumes[0], foreground=input_volume, foregroundOpacity=0.0, label=outputs.layout
    )
    if outputs.metrics_table is not None:
        show_in_views(outputs.metrics_table, outputs.histogram_chart)
