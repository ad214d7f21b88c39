"""The module's background tasks and the one timer that polls them (synthesis, FID/MMD, installing packages,
the model line, the device list).

Each task runs in a worker process; the timer only drains their events and, when one has finished, loads its
results. The states of the buttons live in the qt-free ``LungDDPMLogic.run_control.TaskSlot``, which restores them
even when a step fails; the widget mirrors them in its ``_updateGui``. A tick never raises and never shows a wait
cursor (``run_control.tick_safely``): a failure is logged, the status line says so, and the message box opens after
the tick. ``slicer.util.tryWithErrorDisplay(waitCursor=True)`` is for the user's own actions, in the widget.
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
        self.install = TaskSlot(_("Install"), _("Installing..."), _("Stopping..."))
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
        self.install.abort()
        self.models.close()
        if self.deviceProbe is not None:
            self.deviceProbe.cancel()
            self.deviceProbe = None
        self.timer.stop()

    def ensureTimer(self) -> None:
        """One timer drives every background task; it runs only while something is pending."""
        slots = (self.synthesis, self.setMetrics, self.install)
        pending = any(s.busy for s in slots) or self.models.pending or self.deviceProbe
        if pending and not self.timer.isActive():
            self.timer.start()
        elif not pending and self.timer.isActive():
            self.timer.stop()

    def startInstall(self, run) -> None:
        """Poll an installation that ``ensure_dependencies`` started (Apply and FID/MMD wait for it)."""
        self.install.start(lambda: run)
        self.ui.progressBar.value = 0
        self.ui.progressBar.setVisible(True)
        self.ui.statusLabel.text = run.status

    # --- the timer ------------------------------------------------------------------------------------------

    def onTimer(self) -> None:
        try:
            self._tickModelInfo()
            self._tickDevices()
            self._tickInstall()
            self._tickSynthesis()
            self._tickSetMetrics()
        finally:
            self.widget._updateGui()

    def _failed(self, label, what: str, message: str, details: str) -> None:
        """A task failed in a tick: say so at once, and show the message box after the tick (no wait cursor)."""
        label.text = _("Failed; see the message and the log")
        self.widget.appendLog(_("Error: {message}").format(message=message))
        text = f"{what}\n\n{message}"
        qt.QTimer.singleShot(0, lambda: slicer.util.errorDisplay(text, detailedText=details))

    def _tick(self, slot, load, label, what: str):
        """One poll of ``slot`` (loading with ``load`` when its task has finished); failures are reported."""
        from LungDDPMLogic.run_control import tick_safely

        def report(message: str, details: str) -> None:
            self._failed(label, what, message, details)

        return tick_safely(lambda: slot.tick(load, self.widget._logEvent), report, what)

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

    def _tickInstall(self) -> None:
        if not self.install.busy:
            return
        run = self.install.task
        self._tick(self.install, self._installed, self.ui.statusLabel, _("Installing the packages failed."))
        self.ui.progressBar.setVisible(self.install.busy or self.synthesis.busy)
        if self.install.busy:
            self.ui.progressBar.value = round(100 * run.fraction)
            self.ui.statusLabel.text = run.status

    def _installed(self, run):
        versions = run.result()
        text = ", ".join(f"{name} {version}".strip() for name, version in versions.items())
        self.widget.appendLog(_("Installed: {packages}").format(packages=text))
        self.ui.statusLabel.text = _("Installed: {packages}; press Apply again").format(packages=text)
        return versions

    def _tickSynthesis(self) -> None:
        if not self.synthesis.busy:
            return
        run = self.synthesis.task
        outcome = self._tick(self.synthesis, self._loadSynthesis, self.ui.statusLabel, _("Synthesis failed."))
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
        label = self.ui.setMetricsStatusLabel
        outcome = self._tick(self.setMetrics, self._loadSetMetrics, label, _("FID / MMD failed."))
        if outcome is not None and outcome.kind == "cancelled":
            label.text = _("Cancelled")

    def _loadSetMetrics(self, run):
        table = run.finish()
        self.widget.logic.showTable(table)
        self.ui.setMetricsStatusLabel.text = _("Done: see the table '{name}'").format(name=table.GetName())
        return table
