"""Cancel, scene close and application exit end the worker's whole process tree, without blocking the caller.

Inside Slicer the worker is started through PythonSlicer, a launcher whose child is the real Python; killing only
the launcher left that child on the GPU. These tests start the worker through launcher-like parents (executable
scripts that run the real Python as their child) and check with ``/proc`` that no process of the tree is left.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import List

import conftest_slicer
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks processes through /proc")

LAUNCHER = """#!{python}
# Like PythonSlicer: runs the real Python as a child with the same arguments and waits for it.
import os, subprocess, sys
child = subprocess.Popen([sys.executable, *sys.argv[1:]])
with open(os.environ["LUNGDDPM_TEST_PIDS"], "a") as fh:
    fh.write(f"{{os.getpid()}}\\n{{child.pid}}\\n")
sys.exit(child.wait())
"""

#: A launcher that ignores SIGTERM, whose child ignores it too and starts a grandchild in a new session (out of
#: the process group): only a tree kill that also follows descendants ends all three.
STUBBORN = """#!{python}
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = os.environ["LUNGDDPM_TEST_PIDS"]
code = (
    "import signal, subprocess, sys, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\\n"
    "open(sys.argv[1], 'a').write(str(g.pid) + '\\\\n')\\n"
    "time.sleep(600)\\n"
)
child = subprocess.Popen([sys.executable, "-c", code, pids])
with open(pids, "a") as fh:
    fh.write(f"{{os.getpid()}}\\n{{child.pid}}\\n")
print('{{"type": "log", "message": "ready"}}', flush=True)
time.sleep(600)
"""


def _script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _alive(pid: int) -> bool:
    """Independent of the code under test: the process exists and is not a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2 :].split()[0] != "Z"


def _pids(path: Path, count: int, timeout_s: float = 30.0) -> List[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [int(p) for p in path.read_text().split()] if path.exists() else []
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"the launcher did not report {count} processes")


def _gone_within(pids: List[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pid_file(tmp_path, monkeypatch):
    path = tmp_path / "pids.txt"
    monkeypatch.setenv("LUNGDDPM_TEST_PIDS", str(path))
    return path


@pytest.mark.skipif(not conftest_slicer.slicer_core_available(), reason="slicer-core is not installed")
def test_slicer_cancel_through_a_launcher_leaves_no_process(tmp_path, pid_file, slicer_scene, tiny_checkpoint):
    from LungDDPMLogic.phantom_scene import load_phantom, write_phantom
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    ct, seg = load_phantom(*write_phantom(tmp_path))
    before = slicer_scene.mrmlScene.GetNumberOfNodes()
    settings = RunSettings(checkpoint=tiny_checkpoint, steps=200, sampler="ddim", device="cpu")
    run = SynthesisRun(ct, seg, settings, python=_script(tmp_path, "PythonSlicer", LAUNCHER))
    run.prepare()
    launcher, worker = _pids(pid_file, 2)
    deadline = time.monotonic() + 90
    while run.progress.step < 1 and time.monotonic() < deadline and not run.finished:
        run.poll()
        time.sleep(0.05)
    assert run.progress.step >= 1, (run.errors, run.log)
    asked = time.monotonic()
    run.cancel()
    assert time.monotonic() - asked < 0.5  # returns at once; the GUI keeps polling
    deadline = time.monotonic() + 60
    while not run.finished and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.05)
    assert run.finished
    assert not _alive(launcher) and not _alive(worker)
    workdir = run.worker.workdir
    run.discard()
    assert not workdir.exists() and slicer_scene.mrmlScene.GetNumberOfNodes() == before


def test_slicer_stubborn_tree_is_killed_after_the_grace_period(tmp_path, pid_file):
    conftest_slicer.add_module_path()
    from LungDDPMLogic.worker_launcher import WorkerProcess

    worker = WorkerProcess(python=_script(tmp_path, "stubborn", STUBBORN))
    worker.start_command(["worker", "--job", "unused.json"])
    pids = _pids(pid_file, 3)
    assert all(_alive(p) for p in pids)
    worker.cancel(grace_s=0.5)
    time.sleep(0.3)
    worker.poll()
    assert all(_alive(p) for p in pids)  # SIGTERM ignored: still running within the grace period
    deadline = time.monotonic() + 20
    while not worker.finished() and time.monotonic() < deadline:
        worker.poll()
        time.sleep(0.05)
    assert worker.finished()
    assert _gone_within(pids, 5.0), [p for p in pids if _alive(p)]  # the escaped grandchild too
    worker.cleanup()
    assert not worker.workdir.exists()


def test_slicer_application_exit_kills_running_workers(tmp_path, pid_file):
    """Python exiting (Slicer closing) kills every live worker tree, although nobody cancelled it."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(conftest_slicer.MODULE_DIR)!r})
        from LungDDPMLogic.worker_launcher import WorkerProcess
        worker = WorkerProcess(python={_script(tmp_path, "stubborn", STUBBORN)!r})
        worker.start_command(["worker"])
        pids = Path({str(pid_file)!r})
        while not pids.exists() or len(pids.read_text().split()) < 3:
            time.sleep(0.05)
        print(worker.workdir)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 0, done.stderr
    pids = _pids(pid_file, 3)
    assert _gone_within(pids, 5.0), [p for p in pids if _alive(p)]
    assert not Path(done.stdout.strip()).exists()  # its temporary folder removed too
