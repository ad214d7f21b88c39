"""Progressive distillation: the target against the Gaussian oracle, a tiny real run end to end, resume, bad input.

For data x0 ~ N(mu, s^2) per voxel the exact noise predictor is known (see test_samplers_oracle.py), and every DDIM
step with it is an affine map of z, so the teacher's two steps and the x0 estimate with which one step lands on
them are closed forms, written out here independently of the engine's code.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
import torch

from LungDDPMLib.checkpoint import load_checkpoint, save_checkpoint
from LungDDPMLib.cli import main
from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import NoiseSchedule
from LungDDPMLib.distillation import DistillConfig, eps_target, round_levels, step_levels
from LungDDPMLib.distillation.run import distill
from LungDDPMLib.errors import InputError
from LungDDPMLib.sampling.distilled import DistillationRecord, sampler_for
from LungDDPMLib.sampling.samplers import make_timesteps, sample_ddim
from LungDDPMLib.training import TrainConfig, seeded_model

SCHED = NoiseSchedule()
ABAR = SCHED.alphas_cumprod.double()
MU, S = 0.1, 0.2


def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    ab = ABAR[t].view(-1, 1, 1, 1, 1)
    return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * MU) / (ab * S * S + 1 - ab)).to(x.dtype)


def abar(t: int) -> float:
    return 1.0 if t < 0 else float(ABAR[t])


def ddim_affine(t: int, s: int) -> Tuple[float, float]:
    """(A, B) with z_s = A z_t + B for one exact-denoiser DDIM step: x0 = E[x0 | z_t] = mu + k (z_t - a_t mu)."""
    a_t, sig_t, a_s, sig_s = math.sqrt(abar(t)), math.sqrt(1 - abar(t)), math.sqrt(abar(s)), math.sqrt(1 - abar(s))
    k = a_t * S * S / (a_t * a_t * S * S + sig_t * sig_t)
    c0 = MU * (1 - k * a_t)  # x0 = c0 + k z
    return a_s * k + sig_s / sig_t * (1 - a_t * k), c0 * (a_s - sig_s * a_t / sig_t)


def closed_form_eps_target(z: torch.Tensor, t: int, mid: int, end: int) -> torch.Tensor:
    a1, b1 = ddim_affine(t, mid)
    a2, b2 = ddim_affine(mid, end)
    z_end = a2 * (a1 * z.double() + b1) + b2
    a_t, sig_t, a_e, sig_e = math.sqrt(abar(t)), math.sqrt(1 - abar(t)), math.sqrt(abar(end)), math.sqrt(1 - abar(end))
    x_tilde = (z_end - sig_e / sig_t * z.double()) / (a_e - sig_e / sig_t * a_t)  # Salimans & Ho, Algorithm 2
    return (z.double() - a_t * x_tilde) / sig_t


def keep(x: torch.Tensor, i: int, t_from: int, t_to: int) -> torch.Tensor:
    return x


def no_noise() -> torch.Tensor:
    raise AssertionError("deterministic")


def student_of(teacher: Callable, levels: Tuple[int, ...], clip: bool) -> Callable:
    """A student that predicts its distillation target exactly at each of its levels."""
    index = {levels[2 * i]: i for i in range(len(levels) // 2)}

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return eps_target(teacher, x, SCHED, step_levels(levels, index[int(t[0])]), clip)

    return eps_fn


# ------------------------------------------------------------------------------------------- the analytic oracle
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("teacher_steps", [8, 64])
def test_the_target_from_two_teacher_ddim_steps_is_the_closed_form(clip: bool, teacher_steps: int) -> None:
    levels = round_levels(SCHED, teacher_steps)
    g = torch.Generator().manual_seed(0)
    for i in range(teacher_steps // 2):
        t, mid, end = step_levels(levels, i)
        x0 = MU + S * torch.randn(2, 1, 8, 8, 8, generator=g)  # z from the data's own marginal at level t
        z = math.sqrt(abar(t)) * x0 + math.sqrt(1 - abar(t)) * torch.randn(x0.shape, generator=g)
        got = eps_target(oracle, z, SCHED, (t, mid, end), clip).double()
        want = closed_form_eps_target(z, t, mid, end)
        assert torch.allclose(got, want, atol=2e-4, rtol=1e-4), (i, float((got - want).abs().max()))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_a_student_matching_the_target_reproduces_the_2n_step_teacher_with_n_steps(steps: int) -> None:
    levels = round_levels(SCHED, 2 * steps)
    assert tuple(make_timesteps(SCHED, steps, "trailing")) == levels[::2]  # the sampler a student records
    # float64: at level T-1 an x0 estimate is (z - sigma eps) / alpha with sigma / alpha ~ 5000, so float32 rounding
    # of eps alone moves a 1-step student's output by ~5e-4 (the eps parameterisation's weak spot, see the docs).
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    teacher_out = sample_ddim(oracle, x, SCHED, list(levels), noise=no_noise, hook=keep, clip_x0=False)
    student = student_of(oracle, levels, clip=False)
    student_out = sample_ddim(student, x, SCHED, list(levels[::2]), noise=no_noise, hook=keep, clip_x0=False)
    assert float((student_out - teacher_out).abs().max()) < 1e-9
    # ... which the teacher itself with N steps does not (the test can fail): the student learned something.
    plain = sample_ddim(oracle, x, SCHED, list(levels[::2]), noise=no_noise, hook=keep, clip_x0=False)
    assert float((plain - teacher_out).abs().max()) > 1e-3


def test_loss_weights_are_one_on_the_noise_or_the_paper_s_truncated_snr_on_x0() -> None:
    from LungDDPMLib.distillation import loss_weight

    low, top = abar(10), abar(SCHED.num_timesteps - 1)
    assert loss_weight(low, "eps") == loss_weight(top, "eps") == 1.0
    assert loss_weight(low, "snr-truncated") == 1.0  # SNR > 1: max(SNR, 1) on x0 is SNR on x0, i.e. 1 on eps
    assert loss_weight(top, "snr-truncated") == pytest.approx((1 - top) / top) and (1 - top) / top > 1e6


def test_config_refuses_a_step_count_that_is_not_a_halving_of_the_teacher() -> None:
    assert DistillConfig(steps=4, teacher_steps=64).rounds == 4
    for bad in (3, 5, 64, 0, 128):
        with pytest.raises(InputError, match=r"power of two|>= 1"):
            DistillConfig(steps=bad, teacher_steps=64)


def test_sampler_choice_for_a_student_and_for_an_ordinary_model() -> None:
    rec = DistillationRecord("progressive", 4, "ddim", "trailing", True, 64, "a" * 64)
    cfg, warning = sampler_for(rec)
    assert (cfg.name, cfg.steps, cfg.spacing, cfg.clip_x0, warning) == ("ddim", 4, "trailing", True, None)
    cfg, warning = sampler_for(rec, "dpm++", 20)
    assert cfg.name == "dpm++" and cfg.steps == 20 and "distilled for ddim with 4 steps" in warning
    assert sampler_for(rec, None, 8)[1] is not None
    cfg, warning = sampler_for(None)
    assert (cfg.name, cfg.steps, warning) == ("dpm++", None, None)


# ---------------------------------------------------------------------------------------- a tiny real network
PHANTOMS = ["--phantom", "2", "--phantom-size", "48", "48", "32", "--phantom-spacing", "6", "6", "9"]


def tiny_teacher(path: Path, name: str = "tiny") -> Path:
    """A tiny model in our format; ``lung-ddpm``: the published data handling (channels-linear, ikj, its window)."""
    unet = preset("tiny").unet
    cfg = preset(name, grid=(16, 16, 16)) if name == "tiny" else preset(name, unet=unet, grid=(16, 16, 16))
    model = seeded_model(cfg, 0)
    recipe = {"lr": 1e-3, "grad_accum": 1, "ema_start": 0, "ema_every": 1, "ema_decay": 0.5}
    save_checkpoint(path, model, ema=model, step=7, provenance={"kind": "lungddpm-training", "train_config": recipe})
    return path


def distill_args(teacher: Path, out: Path, *extra: str) -> List[str]:
    return ["distill", str(teacher), "--out", str(out), "--device", "cpu", "--log-every", "1", *PHANTOMS, *extra]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Tuple[Path, Path]:
    root = tmp_path_factory.mktemp("distill")
    teacher = tiny_teacher(root / "teacher.pt")
    args = distill_args(teacher, root / "student.pt", "--steps", "2", "--teacher-steps", "8", "--round-steps", "3")
    assert main([*args, "--checkpoint-every", "2", "--quiet"]) == 0
    return teacher, root / "student.pt"


def test_the_student_is_an_ordinary_checkpoint_that_records_its_teacher_and_sampler(distilled) -> None:
    teacher, student = distilled
    raw = torch.load(student, map_location="cpu", weights_only=True)
    assert raw["format"] == "lungddpm" and set(raw["model"]) == set(raw["ema"])
    ckpt = load_checkpoint(student)
    t = load_checkpoint(teacher)
    assert ckpt.config == t.config and ckpt.step == 2 * 3
    rec = ckpt.distillation
    assert rec.teacher_sha256 == t.sha256 and rec.method == "progressive"
    assert (rec.steps, rec.teacher_steps, rec.rounds, rec.sampler, rec.spacing) == (2, 8, 2, "ddim", "trailing")
    differs = any(
        not torch.equal(a, b) for a, b in zip(ckpt.model.state_dict().values(), t.model.state_dict().values())
    )
    assert differs  # it was trained
    run = student.with_name("student.distill")
    for r in (1, 2):
        lines = [json.loads(x) for x in (run / f"round-{r}" / "loss.jsonl").read_text().splitlines()]
        assert [x["step"] for x in lines] == [1, 2, 3]
        assert sorted(p.name for p in (run / f"round-{r}" / "checkpoints").iterdir()) == [
            "step-0000002.pt",
            "step-0000003.pt",
        ]


def test_info_shows_the_distillation(distilled, capsys) -> None:
    assert main(["info", str(distilled[1])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["distilled"]["steps"] == 2 and info["distilled"]["sampler"] == "ddim"
    assert main(["info", str(distilled[0])]) == 0
    assert json.loads(capsys.readouterr().out)["distilled"] is None


def test_synthesize_runs_the_student_with_its_own_sampler_and_warns_for_another(distilled, tmp_path, capsys) -> None:
    from LungDDPMLib.phantom import make_phantom, save_phantom

    save_phantom(tmp_path, make_phantom((48, 48, 32), (4.0, 4.0, 6.0), seed=3, nodules=1), name="c", seg_nrrd=False)
    common = ["synthesize", "--ct", str(tmp_path / "c_ct.nrrd"), "--layout", str(tmp_path / "c_layout.nrrd")]
    common += ["--checkpoint", str(distilled[1]), "--device", "cpu", "--precision", "fp32"]
    assert main([*common, "--out", str(tmp_path / "a.nrrd")]) == 0
    err = capsys.readouterr().err
    side = json.loads((tmp_path / "a.lungddpm.json").read_text())
    assert (side["sampler"], side["steps"], side["distilled"]["steps"]) == ("ddim", 2, 2)
    assert "distilled model: ddim with 2 steps" in err and "warning" not in err
    assert main([*common, "--out", str(tmp_path / "b.nrrd"), "--sampler", "dpm++", "--steps", "3"]) == 0
    err = capsys.readouterr().err
    assert "warning: this model is a student distilled for ddim with 2 steps" in err
    assert json.loads((tmp_path / "b.lungddpm.json").read_text())["sampler"] == "dpm++"


def _round_losses(run: Path, rounds: int) -> List[List[float]]:
    return [
        [json.loads(x)["loss"] for x in (run / f"round-{r}" / "loss.jsonl").read_text().splitlines()]
        for r in range(1, rounds + 1)
    ]


def test_resume_continues_bit_exactly_like_an_uninterrupted_run(tmp_path) -> None:
    from LungDDPMLib.cli import build_parser
    from LungDDPMLib.commands.data_args import dataset_from_args

    teacher = tiny_teacher(tmp_path / "teacher.pt")
    args = build_parser().parse_args(distill_args(teacher, tmp_path / "x.pt", "--steps", "1"))
    dataset = dataset_from_args(args, load_checkpoint(teacher).config)
    cfg = DistillConfig(steps=1, teacher_steps=4, round_steps=3)
    train = TrainConfig(lr=1e-3, grad_accum=1, ema_start=0, ema_every=1, ema_decay=0.5, log_every=1, checkpoint_every=2)
    straight = distill(teacher, dataset, cfg, train, tmp_path / "a", tmp_path / "a.pt", device="cpu")
    polls = [0]

    def stop_after_four() -> bool:  # polled before every update: 3 of round 1, then 1 of round 2
        polls[0] += 1
        return polls[0] > 4

    first = distill(teacher, dataset, cfg, train, tmp_path / "b", tmp_path / "b.pt", device="cpu",
                    should_stop=stop_after_four)  # fmt: skip
    assert first.stopped_early and first.rounds_done == 1 and first.student is None
    assert not (tmp_path / "b.pt").exists()  # a stopped run leaves no file that looks like a student
    with pytest.raises(InputError, match="--resume"):
        distill(teacher, dataset, cfg, train, tmp_path / "b", tmp_path / "b.pt", device="cpu")
    longer = DistillConfig(steps=1, teacher_steps=4, round_steps=4)
    with pytest.raises(InputError, match="other distillation settings"):
        distill(teacher, dataset, longer, train, tmp_path / "b", tmp_path / "b.pt", device="cpu", resume=True)
    second = distill(teacher, dataset, cfg, train, tmp_path / "b", tmp_path / "b.pt", device="cpu", resume=True)
    assert second.student is not None and len(second.losses[2]) == 2 and second.losses[1] == []
    assert _round_losses(tmp_path / "a", 2) == _round_losses(tmp_path / "b", 2)
    a, b = load_checkpoint(tmp_path / "a.pt").model.state_dict(), load_checkpoint(tmp_path / "b.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.losses[2][1:] == second.losses[2]


def test_training_lowers_the_distillation_loss_on_fixed_draws(tmp_path) -> None:
    from LungDDPMLib.distillation import RoundTrainer
    from LungDDPMLib.training import make_toy_pairs

    teacher = load_checkpoint(tiny_teacher(tmp_path / "teacher.pt")).model
    data = make_toy_pairs(2, (16, 16, 16), seed=1)
    cfg = TrainConfig(lr=3e-3, grad_accum=1, max_steps=15, ema_start=0, log_every=5, checkpoint_every=15)
    recipe = DistillConfig(1, 4, 15, weighting="eps")
    trainer = RoundTrainer(teacher, data, cfg, tmp_path / "r", teacher_steps=4, distill=recipe, device="cpu")
    g = torch.Generator().manual_seed(9)
    ct = torch.cat([data[i]["ct"][None] for i in range(2)])
    cond = trainer.model.condition(torch.stack([data[i]["layout"] for i in range(2)]))
    draws = [(torch.randint(0, 2, (2,), generator=g), torch.randn(ct.shape, generator=g)) for _ in range(4)]

    def held_out_loss() -> float:
        with torch.no_grad():
            return sum(float(trainer._loss_module(ct, cond, i, n)) for i, n in draws) / len(draws)

    before = held_out_loss()
    trainer.fit()
    after = held_out_loss()
    print(f"distillation loss on fixed draws: {before:.4f} -> {after:.4f}")
    assert after < 0.7 * before


def test_a_published_layout_lung_ddpm_model_distils(tmp_path, capsys) -> None:
    teacher = tiny_teacher(tmp_path / "published.pt", "lung-ddpm")
    out = tmp_path / "student.pt"
    args = distill_args(teacher, out, "--steps", "2", "--teacher-steps", "4", "--round-steps", "2")
    assert main([*args, "--weighting", "snr-truncated", "--quiet"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.config.preset == "lung-ddpm" and ckpt.config.layout_resize == "channels-linear"
    assert ckpt.provenance["augmentation"]["flip_prob"] == 0.0  # the published recipe never flips
    assert ckpt.distillation.steps == 2 and ckpt.distillation.weighting == "snr-truncated"
    # The authors' full sampler is not what a few-step student is for: --recipe published refuses it in one line.
    from LungDDPMLib.phantom import make_phantom, save_phantom

    save_phantom(tmp_path, make_phantom((48, 48, 32), (4.0, 4.0, 6.0), seed=3, nodules=1), name="c", seg_nrrd=False)
    argv = [
        "synthesize",
        "--ct",
        str(tmp_path / "c_ct.nrrd"),
        "--layout",
        str(tmp_path / "c_layout.nrrd"),
        "--checkpoint",
        str(out),
        "--device",
        "cpu",
        "--recipe",
        "published",
        "--out",
        str(tmp_path / "p.nrrd"),
    ]
    capsys.readouterr()
    assert main(argv) == 1
    assert "distilled student" in capsys.readouterr().err and not (tmp_path / "p.nrrd").exists()


# ----------------------------------------------------------------------------------------------------- bad input
def cli_error(capsys, *args: str) -> str:
    """Run the command in-process; it must fail with exit code 1 and one ``error:`` line, never a traceback."""
    assert main(list(args)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_teachers_and_step_counts_are_one_line_errors(tmp_path, capsys) -> None:
    (tmp_path / "notes.pt").write_text("not a model\n")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}, protocol=2))
    teacher = tiny_teacher(tmp_path / "teacher.pt")
    cases = {
        "notes.pt": "is not a checkpoint",
        "plain.pt": "unrecognised checkpoint",
        "evil.pt": "would run code",
        "missing.pt": "not found",
    }
    for name, message in cases.items():
        assert message in cli_error(capsys, *distill_args(tmp_path / name, tmp_path / "s.pt", "--steps", "2")), name
    assert "pwned" not in capsys.readouterr().out
    err = cli_error(capsys, *distill_args(teacher, tmp_path / "s.pt", "--steps", "3", "--teacher-steps", "8"))
    assert "power of two (4, 2, 1); got 3" in err
    err = cli_error(capsys, *distill_args(teacher, tmp_path / "s.pt", "--steps", "256", "--teacher-steps", "512"))
    assert "exceeds the model's 250 noise levels" in err
    assert not (tmp_path / "s.pt").exists() and not (tmp_path / "s.distill").exists()


def test_an_existing_run_or_student_is_not_overwritten_without_resume(distilled, capsys) -> None:
    teacher, student = distilled
    before = student.read_bytes()
    args = distill_args(teacher, student, "--steps", "2", "--teacher-steps", "8", "--round-steps", "3")
    assert "already exists" in cli_error(capsys, *args)
    other = student.with_name("other.pt")
    run = ["--run-dir", str(student.with_name("student.distill"))]
    assert "--resume" in cli_error(capsys, *distill_args(teacher, other, "--steps", "2", "--teacher-steps", "8"), *run)
    assert student.read_bytes() == before and not other.exists()


def test_a_damaged_distillation_record_is_refused(tmp_path, capsys) -> None:
    model = seeded_model(preset("tiny", grid=(16, 16, 16)), 0)
    save_checkpoint(tmp_path / "m.pt", model, ema=model, provenance={"distillation": {"method": "progressive"}})
    assert "damaged distillation record" in cli_error(capsys, "info", str(tmp_path / "m.pt"))


# ---------------------------------------------------------------------------------------------- the Slicer module
def test_the_slicer_module_leaves_the_sampler_to_the_model_by_default() -> None:
    """The GUI's default sampler 'auto' and steps 0 reach the job as null, so a student runs its own sampler."""
    import conftest_slicer

    conftest_slicer.add_module_path()
    from LungDDPMLogic.synthesis_run import RunSettings

    fields = RunSettings().job_fields()
    assert fields["sampler"] is None and fields["steps"] is None
    assert RunSettings(sampler="ddim", steps=8).job_fields()["sampler"] == "ddim"
    text = (Path(conftest_slicer.MODULE_DIR) / "LungDDPMGui" / "parameters.py").read_text()
    assert 'Choice(["auto", "dpm++", "ddim", "ddpm"])] = "auto"' in text


def test_a_roi_model_with_ct_condition_channels_distils_and_synthesize_roi_runs_the_student(tmp_path, capsys) -> None:
    """The roi-context kind: ROI patches at native spacing with the real-CT channels, made by the teacher's own data
    handling, then `synthesize --mode roi` with the student's own sampler (the whole path of the bundled model)."""
    import dataclasses

    from test_roi_training import SIZE, SPACING, SPECS, roi_config

    from LungDDPMLib.config import CONDITION_CHANNELS
    from LungDDPMLib.data.datasets import PhantomDataset, model_data_options
    from LungDDPMLib.phantom import make_phantom, save_phantom

    cfg = roi_config(unet=dataclasses.replace(roi_config().unet, layout_channels=CONDITION_CHANNELS))
    teacher = tmp_path / "roi.pt"
    model = seeded_model(cfg, 0)
    save_checkpoint(teacher, model, ema=model, provenance={"kind": "lungddpm-training"})
    dataset = PhantomDataset(1, SIZE, SPACING, base_seed=5, nodules=SPECS, **model_data_options(cfg))
    train = TrainConfig(lr=1e-3, grad_accum=1, ema_start=0, log_every=1, checkpoint_every=2)
    result = distill(teacher, dataset, DistillConfig(2, 4, 2), train, tmp_path / "run", tmp_path / "s.pt", device="cpu")
    assert result.student is not None and len(result.losses[1]) == 2
    save_phantom(tmp_path, make_phantom(SIZE, SPACING, seed=7, nodules=SPECS), name="c", seg_nrrd=False)
    argv = ["synthesize", "--mode", "roi", "--ct", str(tmp_path / "c_ct.nrrd"), "--out", str(tmp_path / "o.nrrd"),
            "--layout", str(tmp_path / "c_layout.nrrd"), "--checkpoint", str(result.student), "--device", "cpu",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    side = json.loads((tmp_path / "o.lungddpm.json").read_text())
    assert (side["sampler"], side["steps"]) == ("ddim", 2) and side["distilled"]["teacher_sha256"]
    assert "warning" not in capsys.readouterr().err
