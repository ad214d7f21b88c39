"""LungDDPM: synthesise thoracic CT from a lung/nodule layout in 3D Slicer (a thin GUI over LungDDPMLogic).

The widget binds ``Resources/UI/LungDDPM.ui`` to a typed parameter node and drives a
:class:`LungDDPMLogic.synthesis_run.SynthesisRun` on a timer; the model runs in a separate worker process, so
the GUI never freezes. Nothing here imports torch: the module shows up before PyTorch is installed.
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
SETTINGS_DEVICE = "LungDDPM/Device"


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
            "segmentation (segments named like 'lung' and 'nodule' are picked automatically), optionally place "
            "nodules at markup points, and press Apply."
        )
        self.parent.acknowledgementText = _(
            "Based on Lung-DDPM (Jiang et al., IEEE TBME 2025). Synthetic images are for research only."
        )


@parameterNodeWrapper
class LungDDPMParameterNode:
    """Everything the GUI shows, saved with the scene. Steps and blend-from 0 mean 'the default'."""

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    lungSegments: str = ""
    noduleSegments: str = ""
    autoLung: bool = False
    noduleMarkups: vtkMRMLMarkupsFiducialNode
    noduleDiameterMm: Annotated[float, WithinRange(3.0, 30.0)] = 10.0
    noduleKind: Annotated[str, Choice(["solid", "part-solid", "ground-glass"])] = "solid"
    noduleShape: Annotated[str, Choice(["round", "lobulated", "spiculated"])] = "round"
    checkpoint: pathlib.Path = pathlib.Path()
    sampler: Annotated[str, Choice(["dpm++", "ddim", "ddpm"])] = "dpm++"
    steps: Annotated[int, WithinRange(0, 250)] = 20
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    numSamples: Annotated[int, WithinRange(1, 16)] = 1
    mode: Annotated[str, Choice(["auto", "full", "roi"])] = "auto"
    aas: bool = True
    blendFrom: Annotated[int, WithinRange(0, 250)] = 0
    precision: Annotated[str, Choice(["auto", "fp32", "bf16"])] = "auto"


class LungDDPMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[LungDDPMLogic] = None
        self._parameterNode: Optional[LungDDPMParameterNode] = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onTimer)
        self._describedCheckpoint: Optional[str] = None
        self._setRun = None
        self._setTimer = qt.QTimer()
        self._setTimer.setInterval(POLL_INTERVAL_MS)
        self._setTimer.timeout.connect(self.onSetMetricsTimer)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungDDPM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LungDDPMLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.guessSegmentsButton.connect("clicked(bool)", self.onGuessSegments)
        self.ui.lungSegmentSelector.connect("segmentSelectionChanged(QStringList)", self.onLungSegmentsPicked)
        self.ui.noduleSegmentSelector.connect("segmentSelectionChanged(QStringList)", self.onNoduleSegmentsPicked)
        self.ui.computeSetMetricsButton.connect("clicked(bool)", self.onComputeSetMetrics)
        self.ui.addNoduleButton.connect("clicked(bool)", self.onAddNodule)
        self.ui.refreshDevicesButton.connect("clicked(bool)", self.onRefreshDevices)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.progressBar.setVisible(False)
        self.ui.deviceComboBox.addItem("auto", "auto")
        self.ui.deviceComboBox.addItem("CPU", "cpu")
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelRun()
        self.cancelSetMetrics()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelRun()
        self.cancelSetMetrics()
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
        if not str(self._parameterNode.checkpoint) or str(self._parameterNode.checkpoint) == ".":
            remembered = qt.QSettings().value(SETTINGS_CHECKPOINT, "")
            if remembered:
                self._parameterNode.checkpoint = pathlib.Path(remembered)

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
        p = self._parameterNode
        running = self._run is not None
        ready = bool(p and p.inputVolume and p.inputSegmentation)
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = running or ready
        self.ui.applyButton.toolTip = _("Stop the synthesis") if running else _("Synthesise CT from the layout")
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.modelCollapsibleButton.enabled = not running
        self.ui.blendFromSpinBox.enabled = bool(p and p.aas)
        self._syncSegmentPickers()
        checkpoint = "" if not p or str(p.checkpoint) in ("", ".") else str(p.checkpoint)
        if checkpoint != self._describedCheckpoint:
            from LungDDPMLogic.model_info import describe_checkpoint

            try:
                self.ui.modelInfoLabel.text = describe_checkpoint(checkpoint)
            except OSError as exc:  # unreadable file: say so, and try again when the choice changes
                self.ui.modelInfoLabel.text = _("Cannot read the model file: {error}").format(error=exc)
            self._describedCheckpoint = checkpoint
        self.ui.computeSetMetricsButton.text = _("Cancel") if self._setRun is not None else _("Compute FID / MMD")

    def _syncSegmentPickers(self) -> None:
        """Check, in the two multi-select pickers, the segments named in the parameter node's text fields."""
        p = self._parameterNode
        seg = p.inputSegmentation if p else None
        for selector, text in ((self.ui.lungSegmentSelector, p.lungSegments if p else ""),
                               (self.ui.noduleSegmentSelector, p.noduleSegments if p else "")):  # fmt: skip
            wasBlocked = selector.blockSignals(True)
            if selector.currentNode() != seg:
                selector.setCurrentNode(seg)
            if seg is not None:
                selector.setSelectedSegmentIDs(self.logic.segmentIdsForText(seg, text))
            selector.blockSignals(wasBlocked)

    # --- actions --------------------------------------------------------------------------------------------

    def onGuessSegments(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot guess the segments."), waitCursor=True):
            lungs, nodules = self.logic.guessSegmentNames(self._parameterNode.inputSegmentation)
            self._parameterNode.lungSegments = ", ".join(lungs)
            self._parameterNode.noduleSegments = ", ".join(nodules)

    def onLungSegmentsPicked(self, segmentIds) -> None:
        self._parameterNode.lungSegments = self.logic.segmentNamesText(
            self._parameterNode.inputSegmentation, segmentIds
        )

    def onNoduleSegmentsPicked(self, segmentIds) -> None:
        self._parameterNode.noduleSegments = self.logic.segmentNamesText(
            self._parameterNode.inputSegmentation, segmentIds
        )

    def onComputeSetMetrics(self) -> None:
        if self._setRun is not None:
            self.cancelSetMetrics()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot compute FID / MMD."), waitCursor=True):
            self._setRun = self.logic.startSetMetrics(
                list(self.ui.realVolumesComboBox.checkedNodes()),
                list(self.ui.syntheticVolumesComboBox.checkedNodes()),
                p.inputSegmentation,
                p.lungSegments,
                p.noduleSegments,
                self.ui.setMetricsUnitComboBox.currentText,
            )
            self.ui.setMetricsStatusLabel.text = _("Extracting features in a background process...")
            self._setTimer.start()
        self._updateGui()

    def onSetMetricsTimer(self) -> None:
        run = self._setRun
        if run is None:
            self._setTimer.stop()
            return
        run.poll()
        if not run.finished:
            return
        self._setTimer.stop()
        self._setRun = None
        self.ui.setMetricsStatusLabel.text = ""
        with slicer.util.tryWithErrorDisplay(_("FID / MMD failed."), waitCursor=True):
            table = run.finish()
            self.logic.showTable(table)
            self.ui.setMetricsStatusLabel.text = _("Done: see the table '{name}'").format(name=table.GetName())
        self._updateGui()

    def cancelSetMetrics(self) -> None:
        if self._setRun is None:
            return
        self._setTimer.stop()
        run, self._setRun = self._setRun, None
        with slicer.util.tryWithErrorDisplay(_("Cannot stop the evaluation."), waitCursor=True):
            run.cancel()
        self.ui.setMetricsStatusLabel.text = _("Cancelled")
        self._updateGui()

    def onAddNodule(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot add the nodule."), waitCursor=True):
            name = self.logic.addNodule(
                p.inputSegmentation, p.inputVolume, p.noduleMarkups, p.noduleDiameterMm, p.noduleKind, p.noduleShape
            )
            if p.noduleSegments:
                p.noduleSegments = f"{p.noduleSegments}, {name}"

    def onRefreshDevices(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot list the compute devices."), waitCursor=True):
            from LungDDPMLogic.dependencies import torch_status

            status = torch_status()
            combo = self.ui.deviceComboBox
            wasBlocked = combo.blockSignals(True)
            combo.clear()
            for value, label in status.devices or [("auto", "auto"), ("cpu", "CPU")]:
                combo.addItem(label, value)
            remembered = qt.QSettings().value(SETTINGS_DEVICE, "auto")
            combo.setCurrentIndex(max(0, combo.findData(remembered)))
            combo.blockSignals(wasBlocked)
            self.ui.deviceStatusLabel.text = status.message

    def onDeviceChanged(self, index: int) -> None:
        qt.QSettings().setValue(SETTINGS_DEVICE, self.ui.deviceComboBox.itemData(index) or "auto")

    def onApplyButton(self) -> None:
        if self._run is not None:
            self.cancelRun()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot start the synthesis."), waitCursor=True):
            from LungDDPMLogic.dependencies import ensure_dependencies

            ensure_dependencies(self.logic.confirm)
            if str(p.checkpoint) not in ("", "."):
                qt.QSettings().setValue(SETTINGS_CHECKPOINT, str(p.checkpoint))
            device = self.ui.deviceComboBox.currentData or "auto"
            self._run = self.logic.startRun(p, device)
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Starting the worker...")
            self._timer.start()
        self._updateGui()

    def onTimer(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        for event in run.poll():
            if event.get("type") == "log":
                logging.info("LungDDPM worker: %s", event.get("message"))
        self.ui.progressBar.value = round(100 * run.progress.fraction)
        self.ui.statusLabel.text = run.eta_text()
        if not run.finished:
            return
        self._timer.stop()
        self._run = None
        self.ui.progressBar.setVisible(False)
        with slicer.util.tryWithErrorDisplay(_("Synthesis failed."), waitCursor=True):
            outputs = run.finish()
            self.logic.showResults(self._parameterNode.inputVolume, outputs)
            self.ui.statusLabel.text = _("Done: {n} synthetic volume(s)").format(n=len(outputs.volumes))
        self._updateGui()

    def cancelRun(self) -> None:
        if self._run is None:
            return
        self._timer.stop()
        run, self._run = self._run, None
        with slicer.util.tryWithErrorDisplay(_("Cannot stop the worker."), waitCursor=True):
            run.cancel()
        self.ui.progressBar.setVisible(False)
        self.ui.statusLabel.text = _("Cancelled; the scene is unchanged")
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
    def guessSegmentNames(segmentationNode) -> tuple:
        from LungDDPMLogic import mrml_bridge as mb

        if segmentationNode is None:
            raise mb.LayoutError("select a segmentation first")
        names = mb.segment_names(segmentationNode)
        lungs, nodules = mb.guess_segments(segmentationNode)
        return [names[s] for s in lungs], [names[s] for s in nodules]

    @staticmethod
    def chosenSegmentIds(segmentationNode, lungText: str, noduleText: str) -> tuple:
        """Lung and nodule segment IDs from the comma-separated name fields; None where a field is empty (guess)."""
        from LungDDPMLogic import mrml_bridge as mb

        def ids(text: str):
            names = mb.split_names(text)
            return mb.segment_ids_from_names(segmentationNode, names) if (segmentationNode and names) else None

        return ids(lungText), ids(noduleText)

    @staticmethod
    def segmentIdsForText(segmentationNode, text: str) -> list:
        """IDs of the segments named in a comma-separated text (unknown names are skipped, not an error here)."""
        from LungDDPMLogic import mrml_bridge as mb

        wanted = {n.lower() for n in mb.split_names(text)}
        return [sid for sid, name in mb.segment_names(segmentationNode).items() if name.lower() in wanted]

    @staticmethod
    def segmentNamesText(segmentationNode, segmentIds) -> str:
        from LungDDPMLogic import mrml_bridge as mb

        names = mb.segment_names(segmentationNode) if segmentationNode is not None else {}
        return ", ".join(names[sid] for sid in segmentIds if sid in names)

    @staticmethod
    def startSetMetrics(realNodes, syntheticNodes, segmentationNode, lungText: str, noduleText: str, unit: str):
        """Check the selection and start ``lungddpm evaluate`` on it; returns the running ``SetMetricsRun``."""
        from LungDDPMLogic.set_metrics_run import SetMetricsRun

        lungIds, noduleIds = LungDDPMLogic.chosenSegmentIds(segmentationNode, lungText, noduleText)
        run = SetMetricsRun(realNodes, syntheticNodes, segmentationNode, lungIds, noduleIds, unit=unit)
        run.prepare()
        return run

    @staticmethod
    def showTable(tableNode) -> None:
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            selection = slicer.app.applicationLogic().GetSelectionNode()
            selection.SetActiveTableID(tableNode.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()

    @staticmethod
    def addNodule(segmentationNode, volumeNode, markupsNode, diameterMm, kind, shape) -> str:
        from LungDDPMLogic import mrml_bridge as mb
        from LungDDPMLogic.nodule_placement import add_nodule_at_markup

        if segmentationNode is None or volumeNode is None:
            raise mb.LayoutError("select the CT volume and the segmentation first")
        segmentId = add_nodule_at_markup(
            segmentationNode, volumeNode, markupsNode, diameter_mm=diameterMm, kind=kind, shape=shape
        )
        return segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()

    @staticmethod
    def runSettings(p: LungDDPMParameterNode, device: str = "auto"):
        from LungDDPMLogic.synthesis_run import RunSettings

        checkpoint = "" if str(p.checkpoint) in ("", ".") else str(p.checkpoint)
        return RunSettings(
            checkpoint=checkpoint,
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
        from LungDDPMLogic.synthesis_run import SynthesisRun

        lungIds, noduleIds = self.chosenSegmentIds(p.inputSegmentation, p.lungSegments, p.noduleSegments)
        run = SynthesisRun(p.inputVolume, p.inputSegmentation, self.runSettings(p, device), lungIds, noduleIds)
        run.prepare()
        for warning in run.log:
            logging.warning("LungDDPM: %s", warning)
        return run

    @staticmethod
    def showResults(inputVolume, outputs) -> None:
        """Synthetic against real in the slice views, the metrics table and the histogram chart."""
        slicer.util.setSliceViewerLayers(
            background=outputs.volumes[0], foreground=inputVolume, foregroundOpacity=0.0, label=outputs.layout
        )
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
            selection = slicer.app.applicationLogic().GetSelectionNode()
            selection.SetActiveTableID(outputs.metrics_table.GetID())
            selection.SetActivePlotChartID(outputs.histogram_chart.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
            slicer.app.applicationLogic().PropagatePlotChartSelection()


class LungDDPMTest(ScriptedLoadableModuleTest):
    """A tiny synthesis on the procedural phantom with a freshly initialised tiny model: no downloads."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_LungDDPM_phantom_synthesis()

    def test_LungDDPM_phantom_synthesis(self) -> None:
        import tempfile

        import numpy as np
        import SimpleITK as sitk
        from LungDDPMLogic import mrml_bridge as mb
        from LungDDPMLogic.dependencies import is_installed
        from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

        self.delayDisplay("Starting the LungDDPM phantom test")
        if not is_installed("torch"):
            self.skipTest("PyTorch is not installed (install it from the PyTorch Utils module)")
        from LungDDPMLib.checkpoint import save_checkpoint
        from LungDDPMLib.config import preset
        from LungDDPMLib.diffusion import DiffusionModel
        from LungDDPMLib.phantom import NoduleSpec, make_phantom

        phantom = make_phantom((64, 64, 40), (3.2, 3.2, 6.0), seed=3, nodules=[NoduleSpec(14.0, side="right")])
        ct = mb.add_volume_from_sitk(phantom.ct, "Phantom CT")
        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Phantom layout")
        seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
        labels = sitk.GetArrayFromImage(phantom.layout)
        for name, value in (("Lung", 1), ("Nodule", 2)):
            segmentId = seg.GetSegmentation().AddEmptySegment("", name, [0.5, 0.5, 0.5])
            slicer.util.updateSegmentBinaryLabelmapFromArray((labels == value).astype(np.uint8), seg, segmentId, ct)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = str(pathlib.Path(folder) / "tiny.pt")
            save_checkpoint(checkpoint, DiffusionModel(preset("tiny", grid=(32, 32, 32), crop="lung")))
            run = SynthesisRun(ct, seg, RunSettings(checkpoint=checkpoint, steps=2, device="cpu"))
            run.prepare()
            while not run.finished:
                run.poll()
                slicer.app.processEvents()
                qt.QThread.msleep(50)
            outputs = run.finish()
        self.assertEqual(len(outputs.volumes), 1)
        synthetic = outputs.volumes[0]
        self.assertEqual(synthetic.GetName(), "Phantom CT synthetic 0")
        self.assertTrue(np.array_equal(mb.ijk_to_ras(synthetic), mb.ijk_to_ras(ct)))
        self.assertEqual(synthetic.GetAttribute("LungDDPM.steps"), "2")
        kept = run.layout.array == 0
        real = slicer.util.arrayFromVolume(ct)
        self.assertLessEqual(
            float(np.abs(slicer.util.arrayFromVolume(synthetic)[kept].astype(float) - real[kept]).max()), 1.0
        )
        self.assertEqual(outputs.metrics_table.GetTable().GetNumberOfRows(), 4)
        self.assertGreater(outputs.histogram_chart.GetNumberOfPlotSeriesNodes(), 0)
        # FID / MMD on request: the synthetic volume against the real one, per lung patch
        setRun = LungDDPMLogic.startSetMetrics([ct], outputs.volumes, seg, "Lung", "Nodule", "patch")
        while not setRun.finished:
            setRun.poll()
            slicer.app.processEvents()
            qt.QThread.msleep(50)
        table = setRun.finish().GetTable()
        values = {
            table.GetValue(r, 0).ToString(): table.GetValue(r, 1).ToString() for r in range(table.GetNumberOfRows())
        }
        self.assertEqual(values["status"], "ok")
        self.assertGreaterEqual(float(values["fid"]), 0.0)
        self.delayDisplay("LungDDPM phantom test passed")
