"""The module's logic in a process that cannot import torch or scikit-image, as in a stock 3D Slicer.

A stock Slicer bundles numpy, scipy and SimpleITK but neither torch nor scikit-image; the module used to import
both in Slicer's process when a synthesis finished, and lost its results. Here the logic runs in a subprocess
whose ``sitecustomize`` (``stock_slicer/``) makes ``import torch``, ``import skimage`` and every engine module
beyond ``errors``, ``config`` and ``data`` raise ImportError, on a real MRML scene (slicer-core). The worker is a
real subprocess that can import torch. The whole flow must complete: dependency check, phantom, synthesis with
metrics through the GUI's task slot, FID/MMD, device listing and model description.
"""

from __future__ import annotations

import importlib.metadata
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
    from LungDDPMLogic.installer import InstallRun, check_step
    from LungDDPMLogic.model_info import CHECKING, ModelDescriber
    from LungDDPMLogic.phantom_scene import load_phantom, run_to_end, write_phantom
    from LungDDPMLogic.run_control import TaskSlot
    from LungDDPMLogic.set_metrics_run import SetMetricsRun
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    questions = []
    install = ensure_dependencies(lambda q: questions.append(q) or False)
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
    check = InstallRun([check_step(["torch", "skimage"])])  # the import check runs in the worker's Python
    check.wait(120)
    print(json.dumps({{
        "refused": refused,
        "segments": [seg.GetSegmentation().GetNthSegment(n).GetName()
                     for n in range(seg.GetSegmentation().GetNumberOfSegments())],
        "questions": questions,
        "install": install is not None,
        "checked": check.result(),
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
    assert out["questions"] == [] and out["install"] is False
    # the import check of an installation ran in the worker: torch imported there, not here (refused here)
    assert out["checked"]["torch"].startswith(importlib.metadata.version("torch").split("+")[0])
    assert out["checked"]["skimage"] == importlib.metadata.version("scikit-image")
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
def test_slicer_missing_worker_packages_are_installed_in_the_worker_only_after_asking(tmp_path, slicer_scene):
    """One question, then pip runs in the worker's Python in the background; its output reaches the log, and the
    final import check there finds that the packages still do not import (this Python refuses them), so the run
    fails with that one line instead of reporting success."""
    from LungDDPMLogic.dependencies import DependencyError, ensure_dependencies, missing_packages
    from LungDDPMLogic.installer import CHECK_CODE

    python = conftest_slicer.python_lacking(tmp_path, "skimage,scipy")
    assert missing_packages(python) == ["scipy", "skimage"]
    assert missing_packages(sys.executable) == []
    questions = []
    with pytest.raises(DependencyError, match="scipy scikit-image; accept the offer"):
        ensure_dependencies(lambda q: questions.append(q) or False, python)
    assert len(questions) == 1 and "scipy, scikit-image" in questions[0] and "background" in questions[0]
    run = ensure_dependencies(lambda q: True, python)  # started, returns at once
    assert [step.args for step in run.steps] == [
        ["-m", "pip", "install", "scipy", "scikit-image"],
        ["-c", CHECK_CODE, "scipy", "skimage"],
    ]
    run.wait(300)
    assert run.finished and any("already satisfied" in line for line in run.log)  # pip ran, and said so
    with pytest.raises(DependencyError, match="still not importable after installing: scipy") as failure:
        run.result()
    assert "\n" not in str(failure.value) and run.index == 1  # the check step was the one that failed


def test_slicer_install_steps_run_one_after_another_without_blocking(tmp_path):
    """Each step is a process of the worker's Python, polled like a run (no poll waits for it); a failed step ends
    the run with the step's name and its last error line, and later steps never start."""
    import importlib.metadata
    import time

    conftest_slicer.add_module_path()
    from LungDDPMLogic.installer import DependencyError, InstallRun, InstallStep, check_step

    run = InstallRun([InstallStep("pip", ["-m", "pip", "--version"]), check_step(["numpy", "SimpleITK"])])
    statuses, slowest = set(), 0.0
    while not run.finished:
        started = time.perf_counter()
        run.poll()
        slowest = max(slowest, time.perf_counter() - started)
        statuses.add(run.status)
        time.sleep(0.02)
    assert slowest < 0.5, slowest  # a poll drains a queue, it never waits for the process
    assert {s.split(":")[0] for s in statuses if "step" in s} == {
        "installing in the background, step 1 of 2",
        "installing in the background, step 2 of 2",
    }
    assert any(line.startswith("pip ") for line in run.log) and run.fraction == 1.0
    assert run.result() == {"numpy": importlib.metadata.version("numpy"), "SimpleITK": run.versions["SimpleITK"]}
    offline = ["-m", "pip", "install", "--no-index", "--find-links", str(tmp_path), "lungddpm-no-such-package"]
    failing = InstallRun([InstallStep("the missing package", offline), check_step(["numpy"])])
    failing.wait(120)
    with pytest.raises(DependencyError, match=r"the missing package failed \(exit code 1\): .*lungddpm-no-such"):
        failing.result()
    assert failing.index == 0 and failing.versions == {}  # the check never ran


def test_slicer_torch_is_installed_by_light_the_torch_in_the_worker():
    """The PyTorch plan: light-the-torch (what the PyTorch extension uses to pick the CUDA build) installed by pip
    and run as a module of the worker's Python, then the import check there; the question says what happens."""
    conftest_slicer.add_module_path()
    from LungDDPMLogic.dependencies import install_question, install_steps
    from LungDDPMLogic.installer import CHECK_CODE

    steps = install_steps(["torch", "skimage"])
    assert [step.args for step in steps] == [
        ["-m", "pip", "install", "light-the-torch>=0.5"],
        ["-m", "light_the_torch", "install", "torch>=2.1"],
        ["-m", "pip", "install", "scikit-image"],
        ["-c", CHECK_CODE, "torch", "skimage"],
    ]
    question = install_question(["torch", "skimage"])
    assert "PyTorch, scikit-image" in question and "GPU driver" in question and "Slicer stays usable" in question


@pytest.mark.skipif(os.name != "posix", reason="the wrapper is a POSIX shell script")
def test_slicer_self_test_says_why_it_cannot_run(tmp_path):
    """Without torch in the worker's Python the self-test logs this line and returns (no failure pop-up)."""
    conftest_slicer.add_module_path()
    from LungDDPMLogic.phantom_scene import self_test_skip_reason

    reason = self_test_skip_reason(conftest_slicer.python_lacking(tmp_path, "torch"))
    assert reason.startswith("the worker's Python lacks torch;") and "press Apply" in reason and "\n" not in reason
    assert self_test_skip_reason(sys.executable) is None


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
