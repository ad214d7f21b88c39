"""The module's logic class: GUI-free entry points that the widget (and scripts) call.

The work is in the qt-free ``LungDDPMLogic`` package (tested on a real MRML scene with slicer-core); this class
only reads the parameter node, passes its values on, and asks questions in the GUI's way.
"""

from __future__ import annotations

import logging

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .parameters import LungDDPMParameterNode


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
        from LungDDPMLogic.synthesis_run import RunSettings, dicom_run_folder

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
            recipe=p.recipe,
            density=p.densityCustom.strip() if p.density == "custom" else p.density,
            dicom_dir=dicom_run_folder(p.dicomFolder),
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
