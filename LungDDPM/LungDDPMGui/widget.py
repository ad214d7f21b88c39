"""The module's widget: binds ``Resources/UI/LungDDPM.ui`` to the parameter node and turns clicks into tasks.

The background tasks and their timer are in :mod:`.tasks`; every decision that can be taken without Qt is in the
qt-free ``LungDDPMLogic`` package, imported inside the methods (Slicer loads this file at every start).
"""

from __future__ import annotations

import logging
from typing import Optional

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .module_logic import LungDDPMLogic
from .parameters import SETTINGS_CHECKPOINT, LungDDPMParameterNode
from .tasks import BackgroundTasks


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
        from LungDDPMLogic.gui_link import ParameterGuiLink

        self.logic: Optional[LungDDPMLogic] = None
        self._parameterNode: Optional[LungDDPMParameterNode] = None
        self._guiLink = ParameterGuiLink()  # the one widget <-> parameter node connection (not connectGui's)
        self._devices = DeviceChoice(QSettingsMapping())
        self.tasks = BackgroundTasks(self)

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
        self.ui.usePublishedModelButton.connect("clicked(bool)", self.onUsePublishedModel)
        self.ui.progressBar.setVisible(False)
        # Fill the device box first, then connect: the first addItem emits currentIndexChanged(0), which would
        # otherwise overwrite the remembered device with "auto" before it is read.
        self._fillDevices(None)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the packages and the engine modules too (Slicer re-executes only the module file, LungDDPM.py)."""
        import LungDDPMLogic

        self.cleanup()
        LungDDPMLogic.unload()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self.tasks.close()
        self._guiLink.disconnect()
        self.removeObservers()

    def onApplicationQuit(self) -> None:
        """Slicer is closing: no timer will run again, so kill every worker tree now."""
        from LungDDPMLogic.worker_launcher import kill_all_workers

        self.tasks.synthesis.abort()
        self.tasks.setMetrics.abort()
        self.tasks.install.abort()
        kill_all_workers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        # The nodes a run reads are about to go: stop it (its files are removed when its process tree is gone).
        self.tasks.synthesis.cancel()
        self.tasks.setMetrics.cancel()
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
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._guiLink.connect(self._parameterNode, self._boundConnectors())
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._updateGui()

    def _disconnectParameterNode(self) -> None:
        """End the widget <-> parameter node connection (exit, scene close, another node); safe to repeat."""
        self._guiLink.disconnect()
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def _boundConnectors(self) -> dict:
        """Slicer's connector for each widget whose ``SlicerParameterName`` names a parameter (as connectGui finds
        them), for the module's own :class:`LungDDPMLogic.gui_link.ParameterGuiLink`."""
        from slicer.parameterNodeWrapper import createGuiConnector

        p = self._parameterNode
        widgets = {w.property("SlicerParameterName"): w for w in vars(self.ui).values() if hasattr(w, "property")}
        return {name: createGuiConnector(w, p.dataType(name)) for name, w in widgets.items() if name}

    def _updateGui(self, caller=None, event=None) -> None:
        """Mirror the parameter node and the task states; cheap (no hashing, no imports of the engine)."""
        from LungDDPMLogic.model_info import model_to_describe, published_plus_file

        p = self._parameterNode
        synthesis, setMetrics = self.tasks.synthesis, self.tasks.setMetrics
        ready = bool(p and p.inputVolume and p.inputSegmentation)
        installing = self.tasks.install.busy  # Apply and FID/MMD wait for the worker's packages
        self.ui.applyButton.text = synthesis.button_text
        self.ui.applyButton.enabled = synthesis.button_enabled and (synthesis.busy or ready) and not installing
        self.ui.applyButton.toolTip = (
            _("Stop the synthesis")
            if synthesis.busy
            else _("Installing the worker's packages; see the log")
            if installing
            else _("Synthesise CT from the layout")
        )
        self.ui.inputsCollapsibleButton.enabled = not synthesis.busy
        self.ui.modelCollapsibleButton.enabled = not synthesis.busy
        self.ui.blendFromSpinBox.enabled = bool(p and p.aas)
        self.ui.densityCustomLineEdit.enabled = bool(p and p.density == "custom")
        self.ui.computeSetMetricsButton.text = setMetrics.button_text
        self.ui.computeSetMetricsButton.enabled = setMetrics.button_enabled and not installing
        self._syncSegmentPickers()
        checkpoint = p.checkpoint if p else ""
        checkpoint = "" if checkpoint == "." else checkpoint
        if self.ui.checkpointPathLineEdit.currentPath != checkpoint:
            wasBlocked = self.ui.checkpointPathLineEdit.blockSignals(True)
            self.ui.checkpointPathLineEdit.currentPath = checkpoint
            self.ui.checkpointPathLineEdit.blockSignals(wasBlocked)
        self.ui.modelInfoLabel.text = self.tasks.models.describe(model_to_describe(checkpoint, p.mode if p else "auto"))
        plus = published_plus_file()
        self.ui.usePublishedModelButton.visible = bool(plus)
        self.ui.usePublishedModelButton.enabled = bool(plus) and checkpoint != plus
        self.ui.noduleMarkupsPlaceWidget.setCurrentNode(p.noduleMarkups if p else None)
        self.tasks.ensureTimer()

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

    def appendLog(self, message: str) -> None:
        self.ui.logTextEdit.appendPlainText(message)
        logging.info("LungDDPM worker: %s", message)

    def _logEvent(self, event: dict) -> None:
        if event.get("type") == "log":
            self.appendLog(str(event.get("message", "")))
        elif event.get("type") == "error":
            self.appendLog(_("Error: {message}").format(message=event.get("message", "")))

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

    def onUsePublishedModel(self) -> None:
        """The Lung-DDPM+ weights the user put in the models folder: a nodule-cube model, so mode auto."""
        from LungDDPMLogic.model_info import published_plus_file

        plus = published_plus_file()
        if self._parameterNode is not None and plus:
            with slicer.util.NodeModify(self._parameterNode):
                self._parameterNode.checkpoint = plus
                self._parameterNode.mode = "auto"

    def onNoduleMarkupsChanged(self, node) -> None:
        self.ui.noduleMarkupsPlaceWidget.setCurrentNode(node)

    def _installingDependencies(self) -> bool:
        """True when the worker's Python lacks packages and their installation has started (in the background,
        after the user's yes); raises a clear error when the user says no. The action waits for the next press."""
        from LungDDPMLogic.dependencies import ensure_dependencies

        run = ensure_dependencies(self.logic.confirm)
        if run is None:
            return False
        self.tasks.startInstall(run)
        self.appendLog(_("Installing in the background: {steps}").format(steps="; ".join(s.title for s in run.steps)))
        return True

    def onComputeSetMetrics(self) -> None:
        slot = self.tasks.setMetrics
        try:
            if slot.busy:
                slot.cancel()
                return
            p = self._parameterNode
            with slicer.util.tryWithErrorDisplay(_("Cannot compute FID / MMD."), waitCursor=True):
                if self._installingDependencies():
                    return
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
            if self.tasks.deviceProbe is None:
                self.tasks.deviceProbe = Probe(["devices"], "devices")
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
        slot = self.tasks.synthesis
        try:
            if slot.busy:
                slot.cancel()
                self.ui.statusLabel.text = _("Stopping the worker...")
                return
            p = self._parameterNode
            with slicer.util.tryWithErrorDisplay(_("Cannot start the synthesis."), waitCursor=True):
                if self._installingDependencies():
                    return
                if p.checkpoint not in ("", "."):
                    qt.QSettings().setValue(SETTINGS_CHECKPOINT, p.checkpoint)
                device = self.ui.deviceComboBox.currentData or "auto"
                run = slot.start(lambda: self.logic.startRun(p, device))
                for warning in run.log:
                    self.appendLog(warning)
                self.ui.progressBar.value = 0
                self.ui.statusLabel.text = _("Starting the worker...")
        finally:
            self.ui.progressBar.setVisible(slot.busy or self.tasks.install.busy)
            self._updateGui()
