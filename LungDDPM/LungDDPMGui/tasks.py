"""The module's background tasks and the one timer that polls them (synthesis, FID/MMD, model line, device list).

Each task runs in a worker process; the timer only drains their events and, when one has finished, loads its
results. The states of the Apply and FID/MMD buttons live in the qt-free ``LungDDPMLogic.run_control.TaskSlot``,
which restores them even when a step fails; the widget mirrors them in its ``_updateGui``.
"""

from __future__ import annotations

import qt
import slicer
from slicer.i18n import tr as _

POLL_INTERVAL_MS = 200


class BackgroundTasks:
    """At most one task of each kind, and the timer that runs only while one is pending."""

    def __init__(self, widget) -> None:
        from LungDDPMLogic.model_info import ModelDescriber
        from LungDDPMLogic.run_control import TaskSlot

        self.widget = widget
        self.synthesis = TaskSlot(_("Apply"), _("Cancel"), _("Stopping..."))
        self.setMetrics = TaskSlot(_("Compute FID / MMD"), _("Cancel"), _("Stopping..."))
        self.models = ModelDescriber()
        self.deviceProbe = None
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.onTimer)

    @property
    def ui(self):
        return self.widget.ui

    def close(self) -> None:
        """Stop every task and kill its process tree (the widget or the scene is going away)."""
        self.synthesis.abort()
        self.setMetrics.abort()
        self.models.close()
        if self.deviceProbe is not None:
            self.deviceProbe.cancel()
            self.deviceProbe = None
        self.timer.stop()

    def ensureTimer(self) -> None:
        """One timer drives every background task; it runs only while something is pending."""
        pending = self.synthesis.busy or self.setMetrics.busy or self.models.pending or self.deviceProbe
        if pending and not self.timer.isActive():
            self.timer.start()
        elif not pending and self.timer.isActive():
            self.timer.stop()

    # --- the timer ------------------------------------------------------------------------------------------

    def onTimer(self) -> None:
        try:
            self._tickModelInfo()
            self._tickDevices()
            self._tickSynthesis()
            self._tickSetMetrics()
        finally:
            self.widget._updateGui()

    def _tickModelInfo(self) -> None:
        text = self.models.poll()
        if text is not None:
            self.ui.modelInfoLabel.text = text

    def _tickDevices(self) -> None:
        probe = self.deviceProbe
        if probe is None or not probe.poll():
            return
        self.deviceProbe = None
        self.widget._fillDevices(probe.result)
        self.ui.deviceStatusLabel.text = probe.result.get("message", "") if probe.result else probe.error

    def _tickSynthesis(self) -> None:
        if not self.synthesis.busy:
            return
        run = self.synthesis.task
        with slicer.util.tryWithErrorDisplay(_("Synthesis failed."), waitCursor=True):
            try:
                outcome = self.synthesis.tick(self._loadSynthesis, self.widget._logEvent)
            except Exception:
                self.ui.statusLabel.text = _("Failed; see the message and the log")
                raise
            finally:
                self.ui.progressBar.setVisible(self.synthesis.busy)
            if self.synthesis.busy:
                self.ui.progressBar.value = round(100 * run.progress.fraction)
                self.ui.statusLabel.text = run.eta_text()
            elif outcome is not None and outcome.kind == "cancelled":
                self.ui.statusLabel.text = _("Cancelled; the scene is unchanged")

    def _loadSynthesis(self, run):
        outputs = run.finish()
        p = self.widget._parameterNode
        self.widget.logic.showResults(p.inputVolume if p else None, outputs)
        self.ui.statusLabel.text = _("Done: {n} synthetic volume(s)").format(n=len(outputs.volumes))
        for note in outputs.notes:
            self.widget.appendLog(note)
        if outputs.metrics_error:
            self.widget.appendLog(_("Metrics: {error}").format(error=outputs.metrics_error))
            self.ui.statusLabel.text += " - " + _("metrics missing: {error}").format(error=outputs.metrics_error)
        return outputs

    def _tickSetMetrics(self) -> None:
        if not self.setMetrics.busy:
            return
        with slicer.util.tryWithErrorDisplay(_("FID / MMD failed."), waitCursor=True):
            try:
                outcome = self.setMetrics.tick(self._loadSetMetrics, self.widget._logEvent)
            except Exception:
                self.ui.setMetricsStatusLabel.text = _("Failed; see the message and the log")
                raise
            if outcome is not None and outcome.kind == "cancelled":
                self.ui.setMetricsStatusLabel.text = _("Cancelled")

    def _loadSetMetrics(self, run):
        table = run.finish()
        self.widget.logic.showTable(table)
        self.ui.setMetricsStatusLabel.text = _("Done: see the table '{name}'").format(name=table.GetName())
        return table
