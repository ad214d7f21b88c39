"""Multi-process training: torchrun with 2 CPU processes (Gloo) must average gradients like one bigger batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from LungDDPMLib.checkpoint import load_checkpoint
from LungDDPMLib.errors import InputError
from LungDDPMLib.training import DistInfo, init_from_env
from LungDDPMLib.training.__main__ import main

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--steps", "3", "--grid", "16", "--samples", "4", "--seed", "5", "--lr", "1e-3"]


def flat_weights(run_dir: Path) -> torch.Tensor:
    state = load_checkpoint(run_dir / "last.pt", weights="model").model.state_dict()
    return torch.cat([v.flatten() for k, v in state.items() if k.startswith("denoise_fn.")])


def losses(run_dir: Path) -> list:
    return [json.loads(line)["loss"] for line in (run_dir / "loss.jsonl").read_text().splitlines()]


def test_single_process_without_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert init_from_env("cpu") == DistInfo()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="missing environment variables"):
        init_from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="not an integer"):
        init_from_env("cpu")


@pytest.mark.distributed
def test_two_cpu_processes_average_gradients_like_one_double_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    ddp_dir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "LungDDPMLib.training",
        "--run-dir",
        str(ddp_dir),
        "--batch-size",
        "1",
        *ARGS,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    for rank in (0, 1):
        assert f"rank {rank} of world_size 2 (backend gloo)" in output
        assert f"rank {rank} done at step 3" in output
    # The two ranks share one stdout pipe, so another rank's line can land right after the summary before its
    # newline: decode the first JSON object on the line and ignore what follows it.
    summary_line = [line for line in proc.stdout.splitlines() if line.startswith("{")][-1]
    summary, _ = json.JSONDecoder().raw_decode(summary_line)
    assert summary["world_size"] == 2 and summary["step"] == 3
    assert load_checkpoint(ddp_dir / "last.pt").step == 3  # the EMA weights load
    assert len(losses(ddp_dir)) == 3  # only rank 0 wrote the log

    # One process with the two shards in one batch computes the same updates (per-sample noise is keyed by
    # the sample's place in the global batch) ...
    assert main(["--run-dir", str(tmp_path / "joint"), "--batch-size", "2", *ARGS]) == 0
    # ... while one process on half the data (what a rank would do if DDP did not average) does not.
    assert main(["--run-dir", str(tmp_path / "half"), "--batch-size", "1", *ARGS]) == 0
    torch.testing.assert_close(losses(ddp_dir), losses(tmp_path / "joint"), rtol=0, atol=1e-5)
    ddp, joint, half = (flat_weights(tmp_path / d) for d in ("ddp", "joint", "half"))
    # Adam's early updates are ~lr * sign(grad), so the few gradients that are ~0 may flip sign under a different
    # float summation order: compare the share of weights that moved apart rather than every element.
    assert ((ddp - joint).abs() > 1e-5).float().mean() < 0.005
    assert ((ddp - half).abs() > 1e-5).float().mean() > 0.2
