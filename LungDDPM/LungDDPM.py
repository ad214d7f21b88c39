"""LungDDPM: synthesise thoracic CT from a lung/nodule layout in 3D Slicer (a thin GUI over LungDDPMLogic).

The widget binds ``Resources/UI/LungDDPM.ui`` to a typed parameter node and drives background tasks (a
:class:`LungDDPMLogic.synthesis_run.SynthesisRun`, an FID/MMD run, probes for devices and model files) on one
timer; each runs in a separate worker process, so the GUI never freezes. Slicer's process imports neither torch
nor scikit-image (a stock Slicer has neither): metrics, hashing and device listing happen in the worker. The
states of the Apply and FID/MMD buttons live in the qt-free :class:`LungDDPMLogic.run_control.TaskSlot`, which
restores them even when a step fails.
"""

# Slicer parameter-node fields are camelCase like the rest of Slicer's Python API.
# ruff: noqa: N815

from __future__ import annotations

import logging
import pathlib
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

POLL_INTERVAL_MS = 200
SETTINGS_CHECKPOINT = "LungDDPM/Checkpoint"


class LungDDPM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LungDDPM")
        self.parent.categories = [_("Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = ["LungDDPM developers"]
        self.parent.helpText = _(
            "Synthesise realistic thoracic CT inside a lung/nodule layout with a Lung-DDPM-compatible diffusion "
            "model; anatomy outside the layout is kept exactly (anatomically aware sampling). Choose the CT and the "
            "segmentation (segments named like 'lung' and 'nodule' are picked automatically; a nodule segment named "
            "with its type, e.g. 'nodule GGO', keeps that type), optionally place nodules of a chosen type at "
            "markup points, and press Apply."
        )
        self.parent.acknowledgementText = _(
            "Based on Lung-DDPM (Jiang et al., IEEE TBME 2025). Synthetic images are for research only."
        )


@parameterNodeWrapper
class LungDDPMParameterNode:
    """Everything the GUI shows, saved with the scene. Steps 0 means the sampler's default, blend-from -1 every step.

    ``lungSegmentIds``/``noduleSegmentIds`` (segment IDs as a JSON list, so renaming a segment does not change the
    choice) and ``checkpoint`` (a str: Slicer's Path connector would show an empty path as ".") are synced with
    their widgets in code, not through ``SlicerParameterName``.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    lungSegmentIds: str = ""
    noduleSegmentIds: str = ""
    autoLung: bool = False
    noduleMarkups: vtkMRMLMarkupsFiducialNode
    noduleDiameterMm: Annotated[float, WithinRange(3.0, 30.0)] = 10.0
    noduleShape: Annotated[str, Choice(["round", "lobulated", "spiculated"])] = "round"
    noduleType: Annotated[str, Choice(["solid", "part-solid", "ground-glass"])] = "solid"
    checkpoint: str = ""
    sampler: Annotated[str, Choice(["dpm++", "ddim", "ddpm"])] = "dpm++"
    steps: Annotated[int, WithinRange(0, 250)] = 20
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    numSamples: Annotated[int, WithinRange(1, 16)] = 1
    mode: Annotated[str, Choice(["auto", "full", "roi"])] = "auto"
    aas: bool = True
    blendFrom: Annotated[int, WithinRange(-1, 249)] = -1  # -1: every step; B: steps from levels <= B
    precision: Annotated[str, Choice(["auto", "fp32", "bf16"])] = "auto"


class QSettingsMapping:
    """``qt.QSettings`` as the small mapping that the qt-free ``DeviceChoice`` stores its choice in."""

    def get(self, key, default=None):
        return qt.QSettings().value(key, default)

    def __setitem__(self, key, value) -> None:
        qt.QSettings().setValue(key, value)


class LungDDPMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        from LungDDPMLogic.device_choice import DeviceChoice
        from LungDDPMLogic.model_info import ModelDescriber
        from LungDDPMLogic.run_control import TaskSlot

        self.logic: Optional[LungDDPMLogic] = None
        self._parameterNode: Optional[LungDDPMParameterNode] = None
        self._parameterNodeGuiTag = None
        self._synthesis = TaskSlot(_("Apply"), _("Cancel"), _("Stopping..."))
        self._setMetrics = TaskSlot(_("Compute FID / MMD"), _("Cancel"), _("Stopping..."))
        self._models = ModelDescriber()
        self._devices = DeviceChoice(QSettingsMapping())
        self._deviceProbe = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onTimer)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungDDPM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LungDDPMLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        slicer.app.connect("aboutToQuit()", self.onApplicationQuit)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.guessSegmentsButton.connect("clicked(bool)", self.onGuessSegments)
        self.ui.lungSegmentSelector.connect("segmentSelectionChanged(QStringList)", self.onLungSegmentsPicked)
        self.ui.noduleSegmentSelector.connect("segmentSelectionChanged(QStringList)", self.onNoduleSegmentsPicked)
        self.ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.onCheckpointChanged)
        self.ui.noduleMarkupsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onNoduleMarkupsChanged)
        self.ui.computeSetMetricsButton.connect("clicked(bool)", self.onComputeSetMetrics)
        self.ui.addNoduleButton.connect("clicked(bool)", self.onAddNodule)
        self.ui.refreshDevicesButton.connect("clicked(bool)", self.onRefreshDevices)
        self.ui.progressBar.setVisible(False)
        # Fill the device box first, then connect: the first addItem emits currentIndexChanged(0), which would
        # otherwise overwrite the remembered device with "auto" before it is read.
        self._fillDevices(None)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the logic package and the engine modules too (Slicer re-executes only this file)."""
        import LungDDPMLogic

        self.cleanup()
        LungDDPMLogic.unload()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self._synthesis.abort()
        self._setMetrics.abort()
        self._models.close()
        if self._deviceProbe is not None:
            self._deviceProbe.cancel()
            self._deviceProbe = None
        self._timer.stop()
        self.removeObservers()

    def onApplicationQuit(self) -> None:
        """Slicer is closing: no timer will run again, so kill every worker tree now."""
        from LungDDPMLogic.worker_launcher import kill_all_workers

        self._synthesis.abort()
        self._setMetrics.abort()
        kill_all_workers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        # The nodes a run reads are about to go: stop it (its files are removed when its process tree is gone).
        self._synthesis.cancel()
        self._setMetrics.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not self._parameterNode.inputSegmentation:
            self._parameterNode.inputSegmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        if self._parameterNode.checkpoint in ("", "."):
            self._parameterNode.checkpoint = qt.QSettings().value(SETTINGS_CHECKPOINT, "") or ""

    def setParameterNode(self, inputParameterNode: Optional[LungDDPMParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._updateGui()

    def _updateGui(self, caller=None, event=None) -> None:
        """Mirror the parameter node and the task states; cheap (no hashing, no imports of the engine)."""
        from LungDDPMLogic.model_info import model_to_describe

        p = self._parameterNode
        synthesis, setMetrics = self._synthesis, self._setMetrics
        ready = bool(p and p.inputVolume and p.inputSegmentation)
        self.ui.applyButton.text = synthesis.button_text
        self.ui.applyButton.enabled = synthesis.button_enabled and (synthesis.busy or ready)
        self.ui.applyButton.toolTip = _("Stop the synthesis") if synthesis.busy else _("Synthesise CT from the layout")
        self.ui.inputsCollapsibleButton.enabled = not synthesis.busy
        self.ui.modelCollapsibleButton.enabled = not synthesis.busy
        self.ui.blendFromSpinBox.enabled = bool(p and p.aas)
        self.ui.computeSetMetricsButton.text = setMetrics.button_text
        self.ui.computeSetMetricsButton.enabled = setMetrics.button_enabled
        self._syncSegmentPickers()
        checkpoint = p.checkpoint if p else ""
        checkpoint = "" if checkpoint == "." else checkpoint
        if self.ui.checkpointPathLineEdit.currentPath != checkpoint:
            wasBlocked = self.ui.checkpointPathLineEdit.blockSignals(True)
            self.ui.checkpointPathLineEdit.currentPath = checkpoint
            self.ui.checkpointPathLineEdit.blockSignals(wasBlocked)
        self.ui.modelInfoLabel.text = self._models.describe(model_to_describe(checkpoint, p.mode if p else "auto"))
        self.ui.noduleMarkupsPlaceWidget.setCurrentNode(p.noduleMarkups if p else None)
        self._ensureTimer()

    def _syncSegmentPickers(self) -> None:
        """Check, in the two multi-select pickers, the segments whose IDs the parameter node holds."""
        from LungDDPMLogic.segment_choice import existing_ids

        p = self._parameterNode
        seg = p.inputSegmentation if p else None
        for selector, text in ((self.ui.lungSegmentSelector, p.lungSegmentIds if p else ""),
                               (self.ui.noduleSegmentSelector, p.noduleSegmentIds if p else "")):  # fmt: skip
            wasBlocked = selector.blockSignals(True)
            if selector.currentNode() != seg:
                selector.setCurrentNode(seg)
            if seg is not None:
                selector.setSelectedSegmentIDs(existing_ids(seg, text))
            selector.blockSignals(wasBlocked)

    def _ensureTimer(self) -> None:
        """One timer drives every background task; it runs only while something is pending."""
        pending = self._synthesis.busy or self._setMetrics.busy or self._models.pending or self._deviceProbe
        if pending and not self._timer.isActive():
            self._timer.start()
        elif not pending and self._timer.isActive():
            self._timer.stop()

    def appendLog(self, message: str) -> None:
        self.ui.logTextEdit.appendPlainText(message)
        logging.info("LungDDPM worker: %s", message)

    def _logEvent(self, event: dict) -> None:
        if event.get("type") == "log":
            self.appendLog(str(event.get("message", "")))
        elif event.get("type") == "error":
            self.appendLog(_("Error: {message}").format(message=event.get("message", "")))

    # --- the timer ------------------------------------------------------------------------------------------

    def onTimer(self) -> None:
        try:
            self._tickModelInfo()
            self._tickDevices()
            self._tickSynthesis()
            self._tickSetMetrics()
        finally:
            self._updateGui()

    def _tickModelInfo(self) -> None:
        text = self._models.poll()
        if text is not None:
            self.ui.modelInfoLabel.text = text

    def _tickDevices(self) -> None:
        probe = self._deviceProbe
        if probe is None or not probe.poll():
            return
        self._deviceProbe = None
        self._fillDevices(probe.result)
        self.ui.deviceStatusLabel.text = probe.result.get("message", "") if probe.result else probe.error

    def _tickSynthesis(self) -> None:
        if not self._synthesis.busy:
            return
        run = self._synthesis.task
        with slicer.util.tryWithErrorDisplay(_("Synthesis failed."), waitCursor=True):
            try:
                outcome = self._synthesis.tick(self._loadSynthesis, self._logEvent)
            except Exception:
                self.ui.statusLabel.text = _("Failed; see the message and the log")
                raise
            finally:
                self.ui.progressBar.setVisible(self._synthesis.busy)
            if self._synthesis.busy:
                self.ui.progressBar.value = round(100 * run.progress.fraction)
                self.ui.statusLabel.text = run.eta_text()
            elif outcome is not None and outcome.kind == "cancelled":
                self.ui.statusLabel.text = _("Cancelled; the scene is unchanged")

    def _loadSynthesis(self, run):
        outputs = run.finish()
        self.logic.showResults(self._parameterNode.inputVolume if self._parameterNode else None, outputs)
        self.ui.statusLabel.text = _("Done: {n} synthetic volume(s)").format(n=len(outputs.volumes))
        for note in outputs.notes:
            self.appendLog(note)
        if outputs.metrics_error:
            self.appendLog(_("Metrics: {error}").format(error=outputs.metrics_error))
            self.ui.statusLabel.text += " - " + _("metrics missing: {error}").format(error=outputs.metrics_error)
        return outputs

    def _tickSetMetrics(self) -> None:
        if not self._setMetrics.busy:
            return
        with slicer.util.tryWithErrorDisplay(_("FID / MMD failed."), waitCursor=True):
            try:
                outcome = self._setMetrics.tick(self._loadSetMetrics, self._logEvent)
            except Exception:
                self.ui.setMetricsStatusLabel.text = _("Failed; see the message and the log")
                raise
            if outcome is not None and outcome.kind == "cancelled":
                self.ui.setMetricsStatusLabel.text = _("Cancelled")

    def _loadSetMetrics(self, run):
        table = run.finish()
        self.logic.showTable(table)
        self.ui.setMetricsStatusLabel.text = _("Done: see the table '{name}'").format(name=table.GetName())
        return table

    # --- actions --------------------------------------------------------------------------------------------

    def onGuessSegments(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot guess the segments."), waitCursor=True):
            from LungDDPMLogic.segment_choice import encode_ids

            lungs, nodules = self.logic.guessSegmentIds(self._parameterNode.inputSegmentation)
            with slicer.util.NodeModify(self._parameterNode):
                self._parameterNode.lungSegmentIds = encode_ids(lungs)
                self._parameterNode.noduleSegmentIds = encode_ids(nodules)

    def onLungSegmentsPicked(self, segmentIds) -> None:
        from LungDDPMLogic.segment_choice import encode_ids

        if self._parameterNode is not None:
            self._parameterNode.lungSegmentIds = encode_ids(list(segmentIds))

    def onNoduleSegmentsPicked(self, segmentIds) -> None:
        from LungDDPMLogic.segment_choice import encode_ids

        if self._parameterNode is not None:
            self._parameterNode.noduleSegmentIds = encode_ids(list(segmentIds))

    def onCheckpointChanged(self, path: str) -> None:
        if self._parameterNode is not None:
            self._parameterNode.checkpoint = path or ""

    def onNoduleMarkupsChanged(self, node) -> None:
        self.ui.noduleMarkupsPlaceWidget.setCurrentNode(node)

    def _checkDependencies(self) -> None:
        """Make sure the worker's Python has its packages (asks before installing; raises a clear error)."""
        from LungDDPMLogic.dependencies import ensure_dependencies

        installed = ensure_dependencies(self.logic.confirm)
        if installed:
            self.appendLog(_("Installed: {packages}").format(packages=", ".join(installed)))

    def onComputeSetMetrics(self) -> None:
        slot = self._setMetrics
        try:
            if slot.busy:
                slot.cancel()
                return
            p = self._parameterNode
            with slicer.util.tryWithErrorDisplay(_("Cannot compute FID / MMD."), waitCursor=True):
                self._checkDependencies()
                slot.start(
                    lambda: self.logic.startSetMetrics(
                        list(self.ui.realVolumesComboBox.checkedNodes()),
                        list(self.ui.syntheticVolumesComboBox.checkedNodes()),
                        p.inputSegmentation,
                        p.lungSegmentIds,
                        p.noduleSegmentIds,
                        self.ui.setMetricsUnitComboBox.currentText,
                    )
                )
                self.ui.setMetricsStatusLabel.text = _("Extracting features in a background process...")
        finally:
            self._updateGui()

    def onAddNodule(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot add the nodule."), waitCursor=True):
            from LungDDPMLogic.segment_choice import decode_ids, encode_ids

            segmentId = self.logic.addNodule(
                p.inputSegmentation, p.inputVolume, p.noduleMarkups, p.noduleDiameterMm, p.noduleShape, p.noduleType
            )
            if p.noduleSegmentIds:
                p.noduleSegmentIds = encode_ids([*decode_ids(p.noduleSegmentIds), segmentId])

    def onRefreshDevices(self) -> None:
        """List the devices in a probe process (importing torch here would hold a CUDA context all session)."""
        from LungDDPMLogic.engine_probe import Probe

        with slicer.util.tryWithErrorDisplay(_("Cannot list the compute devices."), waitCursor=True):
            if self._deviceProbe is None:
                self._deviceProbe = Probe(["devices"], "devices")
                self.ui.deviceStatusLabel.text = _("Looking for compute devices...")
        self._updateGui()

    def _fillDevices(self, devicesEvent) -> None:
        combo = self.ui.deviceComboBox
        items = self._devices.items(devicesEvent)
        with self._devices.filling_items():
            wasBlocked = combo.blockSignals(True)
            combo.clear()
            for value, label in items:
                combo.addItem(label, value)
            combo.setCurrentIndex(self._devices.index_to_select([value for value, _label in items]))
            combo.blockSignals(wasBlocked)

    def onDeviceChanged(self, index: int) -> None:
        self._devices.chosen(self.ui.deviceComboBox.itemData(index))

    def onApplyButton(self) -> None:
        slot = self._synthesis
        try:
            if slot.busy:
                slot.cancel()
                self.ui.statusLabel.text = _("Stopping the worker...")
                return
            p = self._parameterNode
            with slicer.util.tryWithErrorDisplay(_("Cannot start the synthesis."), waitCursor=True):
                self._checkDependencies()
                if p.checkpoint not in ("", "."):
                    qt.QSettings().setValue(SETTINGS_CHECKPOINT, p.checkpoint)
                device = self.ui.deviceComboBox.currentData or "auto"
                run = slot.start(lambda: self.logic.startRun(p, device))
                for warning in run.log:
                    self.appendLog(warning)
                self.ui.progressBar.value = 0
                self.ui.statusLabel.text = _("Starting the worker...")
        finally:
            self.ui.progressBar.setVisible(slot.busy)
            self._updateGui()


class LungDDPMLogic(ScriptedLoadableModuleLogic):
    """GUI-free entry points; the work is in the qt-free ``LungDDPMLogic`` package (tested with slicer-core)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return LungDDPMParameterNode(super().getParameterNode())

    @staticmethod
    def confirm(question: str) -> bool:
        if slicer.app.testingEnabled():
            return True  # no blocking pop-ups in testing mode
        return slicer.util.confirmOkCancelDisplay(question)

    @staticmethod
    def guessSegmentIds(segmentationNode) -> tuple:
        from LungDDPMLogic import mrml_bridge as mb

        if segmentationNode is None:
            raise mb.LayoutError("select a segmentation first")
        return mb.guess_segments(segmentationNode)

    @staticmethod
    def startSetMetrics(realNodes, syntheticNodes, segmentationNode, lungIdsText: str, noduleIdsText: str, unit: str):
        """Check the selection and start ``lungddpm evaluate`` on it; returns the running ``SetMetricsRun``."""
        from LungDDPMLogic.segment_choice import chosen_ids
        from LungDDPMLogic.set_metrics_run import SetMetricsRun

        lungIds, noduleIds = chosen_ids(segmentationNode, lungIdsText, noduleIdsText)
        run = SetMetricsRun(realNodes, syntheticNodes, segmentationNode, lungIds, noduleIds, unit=unit)
        run.prepare()
        return run

    @staticmethod
    def showTable(tableNode) -> None:
        from LungDDPMLogic.result_views import show_in_views

        show_in_views(tableNode)

    @staticmethod
    def addNodule(segmentationNode, volumeNode, markupsNode, diameterMm, shape, noduleType="solid") -> str:
        """Add a nodule segment of the given diameter, (geometric) shape and density class at the last markup
        point; its name states the class ("Nodule 1 ground-glass"). Returns its ID."""
        from LungDDPMLogic import mrml_bridge as mb
        from LungDDPMLogic.nodule_placement import add_nodule_at_markup

        if segmentationNode is None or volumeNode is None:
            raise mb.LayoutError("select the CT volume and the segmentation first")
        return add_nodule_at_markup(
            segmentationNode, volumeNode, markupsNode, diameter_mm=diameterMm, shape=shape, nodule_type=noduleType
        )

    @staticmethod
    def runSettings(p: LungDDPMParameterNode, device: str = "auto"):
        from LungDDPMLogic.synthesis_run import RunSettings

        return RunSettings(
            checkpoint="" if p.checkpoint in ("", ".") else p.checkpoint,
            sampler=p.sampler,
            steps=p.steps,
            seed=p.seed,
            num_samples=p.numSamples,
            mode=p.mode,
            aas=p.aas,
            blend_from=p.blendFrom,
            device=device,
            precision=p.precision,
            auto_lung=p.autoLung,
        )

    def startRun(self, p: LungDDPMParameterNode, device: str = "auto"):
        """Check the inputs and start the worker; returns the running ``SynthesisRun`` (poll it)."""
        from LungDDPMLogic.segment_choice import chosen_ids
        from LungDDPMLogic.synthesis_run import SynthesisRun

        lungIds, noduleIds = chosen_ids(p.inputSegmentation, p.lungSegmentIds, p.noduleSegmentIds)
        run = SynthesisRun(p.inputVolume, p.inputSegmentation, self.runSettings(p, device), lungIds, noduleIds)
        run.prepare()
        for warning in run.log:
            logging.warning("LungDDPM: %s", warning)
        return run

    @staticmethod
    def showResults(inputVolume, outputs) -> None:
        from LungDDPMLogic.result_views import show_results

        show_results(inputVolume, outputs)


class LungDDPMTest(ScriptedLoadableModuleTest):
    """A tiny synthesis of a procedural phantom with the bundled demo model, then FID/MMD: no downloads.

    The phantom is written by the engine in a worker process and the model runs there too, so this test imports
    neither torch nor scikit-image in Slicer's process, like the module itself.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_LungDDPM_phantom_synthesis()

    def test_LungDDPM_phantom_synthesis(self) -> None:
        import tempfile

        from LungDDPMLogic.dependencies import missing_packages
        from LungDDPMLogic.phantom_scene import self_test

        self.delayDisplay("Starting the LungDDPM phantom test")
        missing = missing_packages()
        if missing:
            self.skipTest(f"the worker's Python lacks {missing} (press Apply in the module to install them)")
        with tempfile.TemporaryDirectory() as folder:
            outputs, fid = self_test(pathlib.Path(folder), idle=slicer.app.processEvents)
        self.assertEqual(outputs.metrics_error, "")
        self.assertEqual([v.GetName() for v in outputs.volumes], ["Phantom CT synthetic 0"])
        self.assertEqual(outputs.volumes[0].GetAttribute("LungDDPM.steps"), "2")
        self.assertEqual(outputs.metrics_table.GetTable().GetNumberOfRows(), 4)
        self.assertGreater(outputs.histogram_chart.GetNumberOfPlotSeriesNodes(), 0)
        self.assertEqual(fid["status"], "ok")
        self.assertGreaterEqual(float(fid["fid"]), 0.0)
        self.delayDisplay("LungDDPM phantom test passed")
