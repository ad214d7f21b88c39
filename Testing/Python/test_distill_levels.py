"""A student's tuned default schedule: ``lungddpm export --levels``, the record it writes, and who obeys it.

A distilled student may run best at a shorter DDIM schedule than the one it was distilled for (chosen afterwards on
validation phantoms). These tests write such a record into a real tiny checkpoint file, then check that synthesize
runs those levels (the network is called at exactly them), that the distilled-for steps stay one option away
without a warning, and that bad levels or a non-student are refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest
import torch

from LungDDPMLib.checkpoint import load_checkpoint, save_checkpoint
from LungDDPMLib.cli import main
from LungDDPMLib.config import preset
from LungDDPMLib.errors import CheckpointError, InputError
from LungDDPMLib.sampling.distilled import DistillationRecord, sampler_for
from LungDDPMLib.training import seeded_model

RECORD = DistillationRecord("progressive", 8, "ddim", "trailing", True, 16, "a" * 64, rounds=1, round_steps=3)
TUNED = [249, 170, 100, 35]


def _student(path: Path, record: Optional[dict] = None) -> Path:
    record = RECORD.to_dict() if record is None else record
    model = seeded_model(preset("tiny", grid=(16, 16, 16)), 0)
    save_checkpoint(path, model, ema=model, step=3, provenance={"kind": "lungddpm-training", "distillation": record})
    return path


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_sampler_choice_with_tuned_levels() -> None:
    rec = RECORD.tuned(TUNED, 250)
    cfg, warning = sampler_for(rec)
    assert (cfg.name, cfg.steps, cfg.timesteps, cfg.clip_x0, warning) == ("ddim", 4, tuple(TUNED), True, None)
    cfg, warning = sampler_for(rec, "ddim", 4)  # its own count asked for by number: the same tuned levels
    assert cfg.timesteps == tuple(TUNED) and warning is None
    cfg, warning = sampler_for(rec, None, 8)  # the distilled-for schedule, one option away, no warning
    assert (cfg.steps, cfg.spacing, cfg.timesteps, warning) == (8, "trailing", None, None)
    cfg, warning = sampler_for(rec, "ddim", 6)
    assert cfg.timesteps is None and "tuned to levels [249, 170, 100, 35]" in warning
    cfg, warning = sampler_for(rec, eta=0.5)  # stochastic DDIM at the tuned levels, not some other schedule
    assert (cfg.timesteps, cfg.eta) == (tuple(TUNED), 0.5) and "eta 0.5" in warning
    cfg, warning = sampler_for(rec, None, 8, eta=0.5)
    assert (cfg.steps, cfg.spacing, cfg.timesteps, cfg.eta) == (8, "trailing", None, 0.5) and warning is not None
    assert sampler_for(RECORD)[0].timesteps is None  # untuned: as before
    assert DistillationRecord(**{**RECORD.to_dict(), "levels": [249, 9]}).levels == (249, 9)  # JSON's list: a tuple
    for top in ([250, 100], [200, 100]):
        with pytest.raises(InputError, match="must start at this model's top level 249"):
            RECORD.tuned(top, 250)
    with pytest.raises(InputError, match="strictly descending"):
        RECORD.tuned([100, 249], 250)


def test_export_levels_writes_the_default_and_synthesize_runs_exactly_those_levels(tmp_path, capsys) -> None:
    from LungDDPMLib.phantom import make_phantom, save_phantom

    student = _student(tmp_path / "student.pt")
    before = student.read_bytes()
    out = tmp_path / "tuned.pt"
    assert main(["export", str(student), str(out), "--storage", "float16", "--levels", ",".join(map(str, TUNED))]) == 0
    capsys.readouterr()
    assert student.read_bytes() == before  # the input is never modified
    tuned, plain = load_checkpoint(out), load_checkpoint(student)
    assert tuned.distillation.levels == tuple(TUNED) and tuned.distillation.steps == 8
    assert tuned.distillation.teacher_sha256 == plain.distillation.teacher_sha256
    for a, b in zip(tuned.model.state_dict().values(), plain.model.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)  # float16 storage only
    raw = json.loads(torch.load(out, map_location="cpu", weights_only=True)["provenance"])
    assert raw["distillation"]["levels"] == TUNED

    save_phantom(tmp_path, make_phantom((48, 48, 32), (4.0, 4.0, 6.0), seed=3, nodules=1), name="c", seg_nrrd=False)
    common = ["synthesize", "--ct", str(tmp_path / "c_ct.nrrd"), "--layout", str(tmp_path / "c_layout.nrrd")]
    common += ["--checkpoint", str(out), "--device", "cpu", "--precision", "fp32"]
    seen = []
    net = type(tuned.model.denoise_fn)
    original = net.forward

    def spy(self, x, t):
        seen.append(int(t[0]))
        return original(self, x, t)

    net.forward = spy
    try:
        assert main([*common, "--out", str(tmp_path / "a.nrrd")]) == 0
        first = list(seen)
        seen.clear()
        assert main([*common, "--out", str(tmp_path / "b.nrrd"), "--steps", "8"]) == 0
    finally:
        net.forward = original
    err = capsys.readouterr().err
    assert first == TUNED and seen == [249, 218, 187, 155, 124, 93, 61, 30]  # trailing 8 of T = 250, by hand
    assert "distilled model: ddim with 4 steps at levels [249, 170, 100, 35]" in err and "warning" not in err
    side = json.loads((tmp_path / "a.lungddpm.json").read_text())
    assert (side["sampler"], side["steps"], side["levels"], side["distilled"]["levels"]) == ("ddim", 4, TUNED, TUNED)
    assert json.loads((tmp_path / "b.lungddpm.json").read_text())["levels"] is None


def test_bad_levels_and_non_students_are_refused_in_one_line(tmp_path, capsys) -> None:
    student = _student(tmp_path / "student.pt")
    teacher = tmp_path / "teacher.pt"
    model = seeded_model(preset("tiny", grid=(16, 16, 16)), 0)
    save_checkpoint(teacher, model, ema=model, provenance={"kind": "lungddpm-training"})
    target = tmp_path / "out.pt"
    assert "not a distilled student" in _error(capsys, "export", str(teacher), str(target), "--levels", "249,100")
    for levels, message in (("300,9", "must start at this model's top level 249"), ("200,9", "top level 249"),
                            ("249,a", "comma-separated integer"), ("9,249", "strictly descending")):  # fmt: skip
        assert message in _error(capsys, "export", str(student), str(target), "--levels", levels)
    assert not target.exists()  # nothing half-written
    for bad in ("249", 249, [249, 249], [249, "x"], [-1], [300, 9], [200, 9]):  # the last two: wrong for T = 250
        damaged = _student(tmp_path / "damaged.pt", {**RECORD.to_dict(), "levels": bad})
        with pytest.raises(CheckpointError, match="damaged distillation record"):
            load_checkpoint(damaged)
