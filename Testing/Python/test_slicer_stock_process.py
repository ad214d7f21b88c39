"""The module's logic in a process that cannot import torch or scikit-image, as in a stock 3D Slicer.

A stock Slicer bundles numpy, scipy and SimpleITK but neither torch nor scikit-image; the module used to import
both in Slicer's process when a synthesis finished, and lost its results. Here the logic runs in a subprocess
whose ``sitecustomize`` (``stock_slicer/``) makes ``import torch``, ``import skimage`` and every engine module
beyond ``errors``, ``config`` and ``data`` raise ImportError, on a real MRML scene (slicer-core). The worker is a
real subprocess that can import torch. The whole flow must complete: dependency check, phantom, synthesis with
metrics through the GUI's task slot, FID/MMD, device listing and model description.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import conftest_slicer
import pytest

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1] / "LungDDPM"
BLOCKER_DIR = conftest_slicer.BLOCKER_DIR
#: What Slicer's process may import of the engine: pure-Python errors and config, and the numpy/scipy/SimpleITK
#: data layer (HU check, automatic lung mask). Everything else, and torch and scikit-image, is blocked.
ALLOWED_ENGINE = "LungDDPMLib,LungDDPMLib.errors,LungDDPMLib.config,LungDDPMLib.data,LungDDPMLib.data.*"

pytestmark = pytest.mark.skipif(not conftest_slicer.slicer_core_available(), reason="slicer-core is not installed")

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path[:0] = [{tests!r}, {module!r}]
    refused = []
    for name in ("torch", "skimage", "LungDDPMLib.evaluation", "LungDDPMLib.registry", "LungDDPMLib.gui_tasks"):
        try:
            __import__(name)
        except ImportError:
            refused.append(name)
    import conftest_slicer
    slicer = conftest_slicer.setup_headless()
    from LungDDPMLogic.dependencies import ensure_dependencies
    from LungDDPMLogic.engine_probe import Probe
    from LungDDPMLogic.model_info import CHECKING, ModelDescriber
    from LungDDPMLogic.phantom_scene import load_phantom, run_to_end, write_phantom
    from LungDDPMLogic.run_control import TaskSlot
    from LungDDPMLogic.set_metrics_run import SetMetricsRun
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    questions = []
    installed = ensure_dependencies(lambda q: questions.append(q) or False)
    ct, seg = load_phantom(*write_phantom(Path({work!r})))

    def drive(slot, make):
        slot.start(make)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            outcome = slot.tick(lambda task: task.finish())
            if outcome is not None:
                return outcome
            time.sleep(0.05)
        raise RuntimeError("timed out")

    def synthesis():
        settings = RunSettings(checkpoint={checkpoint!r}, steps=2, num_samples=2, device="cpu")
        run = SynthesisRun(ct, seg, settings)
        run.prepare()
        return run

    slot = TaskSlot("Apply")
    outputs = drive(slot, synthesis).value
    table = outputs.metrics_table.GetTable()
    mae = table.GetColumnByName("MAE (HU)")
    kept = [mae.GetValue(r) for r in range(table.GetNumberOfRows()) if table.GetValue(r, 1).ToString() == "kept"]

    def set_metrics():
        run = SetMetricsRun([ct], outputs.volumes, seg)
        run.prepare()
        return run

    fid_table = drive(TaskSlot("FID"), set_metrics).value.GetTable()
    fid = {{fid_table.GetValue(r, 0).ToString(): fid_table.GetValue(r, 1).ToString()
            for r in range(fid_table.GetNumberOfRows())}}
    devices = Probe(["devices"], "devices").wait(120)
    describer = ModelDescriber()
    first = describer.describe("")
    text = None
    deadline = time.monotonic() + 120
    while text is None and time.monotonic() < deadline:
        text = describer.poll()
        time.sleep(0.05)
    print(json.dumps({{
        "refused": refused,
        "segments": [seg.GetSegmentation().GetNthSegment(n).GetName()
                     for n in range(seg.GetSegmentation().GetNumberOfSegments())],
        "questions": questions,
        "installed": installed,
        "button": slot.button_text,
        "volumes": [v.GetName() for v in outputs.volumes],
        "metrics_error": outputs.metrics_error,
        "rows": table.GetNumberOfRows(),
        "kept_mae": kept,
        "series": outputs.histogram_chart.GetNumberOfPlotSeriesNodes(),
        "fid_status": fid.get("status"),
        "fid": fid.get("fid"),
        "devices": [d[0] for d in devices["devices"]],
        "model_first": first,
        "model": text,
        "engine_modules": sorted(m for m in sys.modules if m.startswith("LungDDPMLib")),
        "heavy": [m for m in ("torch", "skimage") if m in sys.modules],
    }}))
    """
)


def _blocked_env(block: str, allow: str = "") -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BLOCKER_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["LUNGDDPM_BLOCK"] = block
    env["LUNGDDPM_ALLOW"] = allow
    return env


def test_slicer_whole_flow_in_a_process_without_torch_or_skimage(tmp_path, tiny_checkpoint):
    script = SCRIPT.format(tests=str(HERE), module=str(MODULE_DIR), work=str(tmp_path), checkpoint=tiny_checkpoint)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_blocked_env("torch,skimage,LungDDPMLib", ALLOWED_ENGINE),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # the interpreter really is a stock Slicer's: the blocker refused every heavy import
    assert out["refused"] == ["torch", "skimage", "LungDDPMLib.evaluation", "LungDDPMLib.registry",
                              "LungDDPMLib.gui_tasks"]  # fmt: skip
    assert out["heavy"] == []
    allowed = ("LungDDPMLib", "LungDDPMLib.errors", "LungDDPMLib.config")
    assert all(m in allowed or m.startswith("LungDDPMLib.data") for m in out["engine_modules"]), out
    # the worker's Python has everything: nothing asked, nothing installed
    assert out["questions"] == [] and out["installed"] == []
    # the phantom's one nodule arrives as a segment named by its class (read back as a typed layout label)
    assert out["segments"][0] == "Lung" and len(out["segments"]) == 2, out["segments"]
    assert out["segments"][1] in ("Nodule solid", "Nodule part-solid", "Nodule ground-glass"), out["segments"]
    # synthesis: volumes loaded, metrics from the worker's event, the button back to Apply
    assert out["volumes"] == ["Phantom CT synthetic 0", "Phantom CT synthetic 1"]
    assert out["metrics_error"] == "" and out["rows"] == 2 * 4
    assert len(out["kept_mae"]) == 2 and max(out["kept_mae"]) <= 1.0  # AAS keeps the anatomy
    assert out["series"] == 2 * 3  # lung and nodule: real + 2 samples
    assert out["button"] == "Apply"
    # FID/MMD, devices and the model line, all answered by worker processes
    assert out["fid_status"] == "ok" and float(out["fid"]) >= 0.0
    assert out["devices"][:2] == ["auto", "cpu"]
    assert out["model_first"] == "Checking the model file..." and out["model"].startswith("LungDDPM demo model")


@pytest.mark.skipif(os.name != "posix", reason="the wrapper is a POSIX shell script")
def test_slicer_missing_worker_packages_are_installed_only_after_asking(tmp_path, slicer_scene):
    from LungDDPMLogic.dependencies import DependencyError, ensure_dependencies, missing_packages

    python = conftest_slicer.python_lacking(tmp_path, "skimage,scipy")
    assert missing_packages(python) == ["scipy", "skimage"]
    assert missing_packages(sys.executable) == []
    questions, pip_calls = [], []
    with pytest.raises(DependencyError, match="scipy scikit-image"):
        ensure_dependencies(lambda q: questions.append(q) or False, python, pip_calls.append)
    assert len(questions) == 1 and "scipy scikit-image" in questions[0] and pip_calls == []  # asked, not installed
    assert ensure_dependencies(lambda q: True, python, pip_calls.append) == ["scipy", "scikit-image"]
    assert pip_calls == ["scipy scikit-image"]


@pytest.mark.skipif(os.name != "posix", reason="the wrapper is a POSIX shell script")
def test_slicer_metrics_failure_in_the_worker_keeps_the_volumes(tmp_path, tiny_checkpoint, slicer_scene):
    """A worker without scikit-image still synthesises; the metrics event reports the failure and the outputs stay,
    with the layout in the run folder (not at the scene root)."""
    slicer = slicer_scene
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.phantom_scene import load_phantom, write_phantom
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    ct, seg = load_phantom(*write_phantom(tmp_path))
    settings = RunSettings(checkpoint=tiny_checkpoint, steps=2, device="cpu")
    run = SynthesisRun(ct, seg, settings, python=conftest_slicer.python_lacking(tmp_path, "skimage"))
    run.prepare()
    run.wait(timeout=240)
    outputs = run.finish()
    assert "skimage" in outputs.metrics_error and outputs.metrics_table is None
    assert [v.GetName() for v in outputs.volumes] == ["Phantom CT synthetic 0"]
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    assert sh.GetItemParent(so.sh_item(outputs.layout)) == outputs.folder
    assert sh.GetItemParent(so.sh_item(outputs.volumes[0])) == outputs.folder
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == 0
