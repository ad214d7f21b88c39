"""What GUIs ask the engine in a worker process: paired metrics after a result, devices, model files (gui_tasks)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from LungDDPMLib.gui_tasks import HISTOGRAM_BINS_HU, metrics_event, metrics_payload, with_metrics
from LungDDPMLib.worker import Case, Job


def _layout(shape=(16, 20, 24)) -> np.ndarray:
    layout = np.zeros(shape, np.uint8)
    layout[3:13, 4:16, 5:19] = 1
    layout[6:10, 8:12, 9:13] = 2
    return layout


def test_metrics_payload_is_json_ready_and_exact_where_anatomy_is_kept():
    layout = _layout()
    rng = np.random.default_rng(0)
    real = rng.normal(-700, 100, layout.shape).astype(np.float32)
    synthetic = real.copy()
    synthetic[layout > 0] += 50.0  # generated regions differ by exactly 50 HU
    payload = json.loads(json.dumps(metrics_payload(real, [synthetic, real], layout)))
    first, second = payload["samples"]
    assert first["kept"]["mae_hu"] == 0.0 and abs(first["lung"]["mae_hu"] - 50.0) < 1e-3
    assert second["generated"]["mae_hu"] == 0.0
    histograms = payload["histograms"]
    assert len(histograms["bins_hu"]) == len(HISTOGRAM_BINS_HU) - 1
    assert set(histograms["regions"]) == {"lung", "nodule"}
    for region in histograms["regions"].values():
        assert abs(sum(region["real"]) - 1.0) < 1e-9 and len(region["synthetic"]) == 2
    assert "nodule" not in metrics_payload(real, [real], np.minimum(layout, 1))["histograms"]["regions"]


def test_metrics_follow_each_result_and_a_failure_never_raises(tmp_path):
    layout = _layout()
    real = np.full(layout.shape, -800, np.int16)
    real[layout == 2] = 20
    paths = {}
    for name, array in (("ct", real), ("layout", layout), ("out", real + 5)):
        paths[name] = str(tmp_path / f"{name}.nrrd")
        sitk.WriteImage(sitk.GetImageFromArray(array), paths[name])
    job = Job([Case("c", paths["ct"], paths["layout"], str(tmp_path / "out"))])
    events = []
    emit = with_metrics(events.append, job)
    emit({"type": "progress", "step": 1})
    emit({"type": "result", "case": 0, "name": "c", "paths": [paths["out"]]})
    assert [e["type"] for e in events] == ["progress", "result", "log", "metrics"]
    assert events[3]["ok"] and events[3]["samples"][0]["lung"]["mae_hu"] == 5.0
    broken = metrics_event(job, {"type": "result", "case": 0, "name": "c", "paths": [str(tmp_path / "gone.nrrd")]})
    assert broken["ok"] is False and "gone.nrrd" in broken["message"]


def _probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "LungDDPMLib", "probe", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_probe_command_answers_devices_and_models(tmp_path):
    devices = _probe("devices")
    assert devices["type"] == "devices" and devices["devices"][:2] == [["auto", "auto (GPU if available)"],
                                                                        ["cpu", "CPU"]]  # fmt: skip
    assert devices["torch"] and isinstance(devices["cuda_available"], bool)
    demo = _probe("model")
    assert demo["known"] == "lungddpm-demo" and len(demo["sha256"]) == 64
    other = tmp_path / "Lung-DDPM-LIDC-IDRI-100000-steps.pt"
    other.write_bytes(b"not the weights")
    named = _probe("model", str(other))
    assert named["known"] == "lung-ddpm" and "file name only" in named["text"]
    assert _probe("model", str(tmp_path / "absent.pt"))["text"].startswith("File not found")
