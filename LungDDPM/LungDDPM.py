"""LungDDPM: synthesise thoracic CT from a lung/nodule layout in 3D Slicer (a thin GUI over LungDDPMLogic).

Slicer finds the module's classes here: the module description, the widget, the logic and the self-test. The
widget (``LungDDPMGui.widget``) binds ``Resources/UI/LungDDPM.ui`` to a typed parameter node
(``LungDDPMGui.parameters``) and drives background tasks (a :class:`LungDDPMLogic.synthesis_run.SynthesisRun`, an
FID/MMD run, probes for devices and model files) on one timer (``LungDDPMGui.tasks``); each runs in a separate
worker process, so the GUI never freezes. Slicer's process imports neither torch nor scikit-image (a stock Slicer
has neither): metrics, hashing and device listing happen in the worker.
"""

from __future__ import annotations

import logging
import pathlib

import slicer
from LungDDPMGui.module_logic import LungDDPMLogic
from LungDDPMGui.parameters import LungDDPMParameterNode
from LungDDPMGui.widget import LungDDPMWidget
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

#: What Slicer looks up in this file (by name), and what scripts import from it.
__all__ = ["LungDDPM", "LungDDPMLogic", "LungDDPMParameterNode", "LungDDPMTest", "LungDDPMWidget"]


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


class LungDDPMTest(ScriptedLoadableModuleTest):
    """A tiny synthesis of a procedural phantom with the bundled demo model, then FID/MMD: no downloads.

    The phantom is written by the engine in a worker process and the model runs there too, so this test imports
    neither torch nor scikit-image in Slicer's process, like the module itself.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        """What *Reload and Test* calls, directly and not through a unittest runner: without the worker's packages
        it logs why and returns (``skipTest`` here raised, and showed as a failure pop-up)."""
        from LungDDPMLogic.phantom_scene import self_test_skip_reason

        self.setUp()
        reason = self_test_skip_reason()
        if reason:
            logging.warning("LungDDPM self-test skipped: %s", reason)
            return
        self.test_LungDDPM_phantom_synthesis()

    def test_LungDDPM_phantom_synthesis(self) -> None:
        import tempfile

        from LungDDPMLogic.phantom_scene import self_test, self_test_skip_reason

        reason = self_test_skip_reason()
        if reason:  # a unittest runner (CTest) reports this as a skip
            self.skipTest(reason)
        self.delayDisplay("Starting the LungDDPM phantom test")
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
