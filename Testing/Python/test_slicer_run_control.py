"""The Apply and FID/MMD buttons' state machine (qt-free TaskSlot) with real runs, real workers and failures.

The bug: ``slicer.util.tryWithErrorDisplay`` re-raises, so when a run or FID/MMD failed the widget never reset its
state; the button kept saying Cancel and the next press started a new run. Each test drives a slot exactly as the
widget's timer does and checks the state after a failure at each stage.
"""

from __future__ import annotations

import logging
import os
import time

import conftest_slicer
import pytest

pytestmark = pytest.mark.skipif(not conftest_slicer.slicer_core_available(), reason="slicer-core is not installed")


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    conftest_slicer.add_module_path()
    from LungDDPMLogic.phantom_scene import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"))


def _tick_until_idle(slot, on_done, timeout_s=120.0):
    """What the widget's timer does: tick until the slot is idle; returns the outcome (exceptions propagate)."""
    deadline = time.monotonic() + timeout_s
    while slot.busy and time.monotonic() < deadline:
        outcome = slot.tick(on_done)
        if outcome is not None:
            return outcome
        time.sleep(0.05)
    raise AssertionError(f"the slot is still {slot.state.value}")


def _synthesis(ct, seg, **settings):
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    def make():
        run = SynthesisRun(ct, seg, RunSettings(device="cpu", **settings))
        run.prepare()
        return run

    return make


def test_slicer_failed_run_restores_the_button_and_a_new_run_can_start(slicer_scene, phantom_files, tmp_path):
    from LungDDPMLogic.phantom_scene import load_phantom
    from LungDDPMLogic.run_control import State, TaskSlot
    from LungDDPMLogic.synthesis_run import WorkerError

    ct, seg = load_phantom(*phantom_files)
    before = slicer_scene.mrmlScene.GetNumberOfNodes()
    slot = TaskSlot("Apply", "Cancel", "Stopping...")
    assert (slot.state, slot.button_text, slot.button_enabled) == (State.IDLE, "Apply", True)
    # 1. the worker fails (a model file that does not exist): the error reaches the caller, the slot is idle
    slot.start(_synthesis(ct, seg, checkpoint=str(tmp_path / "missing.pt"), steps=2))
    assert (slot.state, slot.button_text) == (State.RUNNING, "Cancel")
    with pytest.raises(WorkerError, match=r"missing\.pt"):
        _tick_until_idle(slot, lambda run: run.finish())
    assert (slot.state, slot.button_text, slot.button_enabled) == (State.IDLE, "Apply", True)
    assert slot.task is None and slicer_scene.mrmlScene.GetNumberOfNodes() == before
    # 2. starting fails (no segmentation): still idle, nothing created
    with pytest.raises(Exception, match="segmentation"):
        slot.start(_synthesis(ct, None, steps=2))
    assert slot.state is State.IDLE
    # 3. the run succeeds but showing the results fails: idle again, the loaded outputs stay
    slot.start(_synthesis(ct, seg, steps=2))

    def show_fails(run):
        run.finish()
        raise RuntimeError("the layout manager is gone")

    with pytest.raises(RuntimeError, match="layout manager"):
        _tick_until_idle(slot, show_fails, timeout_s=240)
    assert slot.state is State.IDLE
    assert slicer_scene.mrmlScene.GetFirstNodeByName("Phantom CT synthetic 0") is not None
    # 4. a press while running cancels (never starts a second run); the button is disabled until the tree is gone
    run = slot.start(_synthesis(ct, seg, steps=200, sampler="ddim"))
    with pytest.raises(RuntimeError, match="already running"):
        slot.start(_synthesis(ct, seg, steps=2))
    slot.cancel()
    assert (slot.state, slot.button_text, slot.button_enabled) == (State.STOPPING, "Stopping...", False)
    outcome = _tick_until_idle(slot, lambda r: pytest.fail("a cancelled run must not be loaded"))
    assert outcome.kind == "cancelled" and slot.state is State.IDLE
    assert not run.worker.workdir.exists()  # the files go once the process tree is gone


def test_slicer_timer_tick_reports_a_failure_instead_of_raising(slicer_scene, phantom_files, tmp_path, caplog):
    """The GUI's 200 ms poll goes through tick_safely (no tryWithErrorDisplay, no wait cursor per tick): a failed run
    is reported once, with its one-line message and the traceback for the details, logged, and the slot is idle."""
    from LungDDPMLogic.phantom_scene import load_phantom
    from LungDDPMLogic.run_control import State, TaskSlot, tick_safely

    ct, seg = load_phantom(*phantom_files)
    slot = TaskSlot("Apply")
    slot.start(_synthesis(ct, seg, checkpoint=str(tmp_path / "missing.pt"), steps=2))
    reports, ticks, deadline = [], 0, time.monotonic() + 120
    with caplog.at_level(logging.ERROR):
        while slot.busy and time.monotonic() < deadline:
            report = lambda message, details: reports.append((message, details))  # noqa: E731
            outcome = tick_safely(lambda: slot.tick(lambda run: run.finish()), report, "Synthesis failed.")
            ticks += 1
            time.sleep(0.05)
    assert ticks > 1 and outcome is None and (slot.state, slot.button_text) == (State.IDLE, "Apply")
    assert len(reports) == 1
    message, details = reports[0]
    assert "missing.pt" in message and "\n" not in message and "Traceback" not in message
    assert "Traceback" in details and "WorkerError" in details
    assert [r.levelno for r in caplog.records if "missing.pt" in r.getMessage()] == [logging.ERROR]
    assert tick_safely(lambda: "outcome", report, "unused") == "outcome" and len(reports) == 1


@pytest.mark.skipif(os.name != "posix", reason="the worker wrapper is a POSIX shell script")
def test_slicer_failed_fid_mmd_restores_the_button_with_a_one_line_message(slicer_scene, phantom_files, tmp_path):
    """FID/MMD in a worker that lacks scikit-image: a one-line error naming the package, and the slot idle."""
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.phantom_scene import load_phantom
    from LungDDPMLogic.run_control import State, TaskSlot
    from LungDDPMLogic.set_metrics_run import SetMetricsRun
    from LungDDPMLogic.synthesis_run import WorkerError

    ct, seg = load_phantom(*phantom_files)
    sample = so.add_volume_like(ct, mb.volume_array(ct) + 10, "Phantom CT synthetic 0")
    python = conftest_slicer.python_lacking(tmp_path, "skimage")

    def make():
        run = SetMetricsRun([ct], [sample], seg, python=python)
        run.prepare()
        return run

    slot = TaskSlot("Compute FID / MMD")
    slot.start(make)
    with pytest.raises(WorkerError) as failure:
        _tick_until_idle(slot, lambda run: run.finish())
    message = str(failure.value)
    assert "skimage" in message and "Traceback" not in message and "\n" not in message and "--debug" not in message
    assert (slot.state, slot.button_text, slot.button_enabled) == (State.IDLE, "Compute FID / MMD", True)


def test_slicer_abort_kills_at_once(slicer_scene, phantom_files):
    """Scene close and application exit abort: the process tree is killed and the files removed immediately."""
    from LungDDPMLogic.phantom_scene import load_phantom
    from LungDDPMLogic.run_control import State, TaskSlot

    ct, seg = load_phantom(*phantom_files)
    slot = TaskSlot("Apply")
    run = slot.start(_synthesis(ct, seg, steps=200, sampler="ddim"))
    process = run.worker.process
    slot.abort()
    assert slot.state is State.IDLE and process.poll() is not None and not run.worker.workdir.exists()


def test_slicer_blend_from_reaches_the_job_with_the_published_meaning() -> None:
    """-1 (the spin box's 'every step') is the default; 0 is the published --blend_from 0 (the last step only)."""
    conftest_slicer.add_module_path()
    from LungDDPMLogic.synthesis_run import RunSettings

    assert RunSettings().job_fields()["blend_from"] is None
    assert RunSettings(blend_from=0).job_fields()["blend_from"] == 0
    assert RunSettings(blend_from=120).job_fields()["blend_from"] == 120
