"""Tests of the trainer: recipe defaults, EMA rule, exact resume, checkpoints, cancel, progress and bad input."""

from __future__ import annotations

import json
from typing import Dict, List

import pytest
import torch

from LungDDPMLib.checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint
from LungDDPMLib.config import ModelConfig, UNetConfig, preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import CheckpointError, InputError
from LungDDPMLib.training import (
    EMA,
    InMemoryPairs,
    StreamSampler,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    derive_seed,
    make_toy_pairs,
    seeded_model,
)

GRID = (16, 16, 16)


def small_config(grid=GRID) -> ModelConfig:
    """~46k parameters and no attention at full resolution: fast enough for many CPU steps."""
    unet = UNetConfig(model_channels=4, channel_mult=(1, 2, 2), attention_levels=())
    return ModelConfig(unet=unet, grid=grid, normalization="hu-window")


def quick(**overrides) -> TrainConfig:
    base = dict(
        lr=1e-3,
        batch_size=1,
        grad_accum=1,
        max_steps=4,
        ema_start=1,
        ema_every=1,
        ema_decay=0.9,
        checkpoint_every=1000,
        log_every=1,
        seed=3,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def toy16() -> InMemoryPairs:
    return make_toy_pairs(5, GRID, seed=2)


def weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"


# ------------------------------------------------------------------------------------------------ config and EMA
def test_defaults_are_the_published_recipe_and_round_trip_through_json():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.grad_accum, cfg.max_steps) == ("adam", 1e-5, 1, 2, 100_000)
    assert (cfg.ema_decay, cfg.ema_every, cfg.ema_start, cfg.precision, cfg.loss) == (0.995, 10, 2000, "fp32", "l1")
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    changed = TrainConfig(optimizer="adamw", weight_decay=0.01, grad_clip=1.0, precision="bf16")
    assert TrainConfig.from_dict(json.loads(changed.to_json())) == changed


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": 0.0},
        {"lr": -1e-4},
        {"lr": float("nan")},
        {"grad_accum": 0},
        {"batch_size": 0},
        {"optimizer": "sgd"},
        {"ema_decay": 1.0},
        {"grad_clip": 0.0},
        {"precision": "fp16"},
        {"loss": "huber"},
        {"seed": -1},
        {"num_workers": -1},
        {"grad_accum": True},
    ],
)
def test_bad_settings_are_input_errors(bad):
    with pytest.raises(InputError):
        TrainConfig(**bad)
    with pytest.raises(InputError, match="unknown training settings"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_ema_copies_before_start_then_averages_on_its_interval():
    cfg = small_config()
    a, b = seeded_model(cfg, 0), seeded_model(cfg, 1)
    ema = EMA(a, decay=0.5, every=2, start=2)
    assert all(not p.requires_grad for p in ema.model.parameters())
    assert ema.update(b, 1) == "copy"  # index 0 < start
    assert_same(weights(ema.model), weights(b))
    assert ema.update(a, 2) == "skip"  # index 1 not on the interval
    assert ema.update(a, 3) == "average"  # index 2 >= start
    for e, pa, pb in zip(ema.model.parameters(), a.parameters(), b.parameters()):
        torch.testing.assert_close(e, 0.5 * pb + 0.5 * pa)


def test_stream_sampler_shards_cover_each_epoch_and_resume_anywhere():
    ranks = [StreamSampler(5, 7, rank=r, world_size=2) for r in range(2)]
    orders = [s.epoch_order(0) for s in ranks]
    assert len(orders[0]) == len(orders[1]) == 3
    assert set(orders[0] + orders[1]) == set(range(5))
    stream = iter(StreamSampler(5, 7))
    first = [next(stream) for _ in range(12)]
    later = iter(StreamSampler(5, 7, start=7))
    assert [next(later) for _ in range(5)] == first[7:]
    assert derive_seed(1, "a", 2) == derive_seed(1, "a", 2) != derive_seed(1, "a", 3)


def test_per_sample_noise_reproduces_the_engine_loss(toy16, tmp_path):
    trainer = Trainer(seeded_model(small_config(), 0), toy16, quick(), tmp_path, device="cpu")
    item = toy16[0]
    ct, layout = item["ct"][None], item["layout"][None]
    t, noise = trainer.draw_noise(5, 0, ct)
    ours = trainer._loss_module(ct, trainer.model.condition(layout), t, noise)
    gen = torch.Generator().manual_seed(derive_seed(trainer.config.seed, "noise", 5, 0))
    engine = trainer.model.loss(ct, trainer.model.condition(layout), generator=gen)
    assert torch.equal(ours, engine)


# ------------------------------------------------------------------------------------------- resume and files
def test_resume_gives_bit_identical_weights_optimiser_and_ema(toy16, tmp_path):
    cfg = quick(
        batch_size=2,
        grad_accum=2,
        max_steps=6,
        ema_start=2,
        ema_every=2,
        optimizer="adamw",
        weight_decay=0.01,
        grad_clip=0.5,
    )
    model = seeded_model(small_config(), 0)
    before = weights(model)
    straight = Trainer(model, toy16, cfg, tmp_path / "a", device="cpu")
    straight.fit()
    first = Trainer(model, toy16, cfg, tmp_path / "b", device="cpu")
    assert first.fit(max_steps=3).step == 3
    resumed = Trainer(model, toy16, cfg, tmp_path / "b", device="cpu", resume=True)
    assert (resumed.step, resumed.samples_seen) == (3, 12)
    assert resumed.fit().step == 6
    assert_same(weights(straight.model), weights(resumed.model))
    assert_same(weights(straight.ema_model), weights(resumed.ema_model))
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    logs = [[json.loads(x) for x in (tmp_path / d / "loss.jsonl").read_text().splitlines()] for d in "ab"]
    assert [r["step"] for r in logs[1]] == list(range(1, 7))
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    assert_same(weights(model), before)  # the caller's model is copied, never trained in place


def test_worker_processes_do_not_change_the_result(toy16, tmp_path):
    model = seeded_model(small_config(), 0)
    runs = [Trainer(model, toy16, quick(max_steps=3, num_workers=n), tmp_path / str(n), device="cpu") for n in (0, 2)]
    for run in runs:
        run.fit()
    assert_same(weights(runs[0].model), weights(runs[1].model))


def test_checkpoints_are_atomic_weights_only_and_load_the_ema(toy16, tmp_path):
    cfg = quick(max_steps=4, checkpoint_every=2)
    trainer = Trainer(seeded_model(small_config(), 0), toy16, cfg, tmp_path, device="cpu")
    result = trainer.fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-0000002.pt", "step-0000004.pt"]
    assert not list(tmp_path.rglob("*.tmp"))
    data = read_checkpoint_file(tmp_path / "last.pt")  # weights_only=True
    state = data["trainer"]
    assert isinstance(state["rng"]["torch_cpu"], torch.Tensor) and state["rng"]["torch_cpu"].dtype == torch.uint8
    assert state["data"]["samples_seen"] == 4 and state["optimizer"]["state"]
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded.step == 4 == result.step and loaded.weights == "ema"
    assert loaded.provenance["train_config"] == cfg.to_dict()
    assert_same(weights(loaded.model), weights(trainer.ema_model))
    raw = load_checkpoint(tmp_path / "last.pt", weights="model")
    assert_same(weights(raw.model), weights(trainer.model))


def test_progress_callback_and_cancel_save_a_checkpoint(toy16, tmp_path):
    seen: List[tuple] = []
    trainer = Trainer(seeded_model(small_config(), 0), toy16, quick(max_steps=50), tmp_path, device="cpu")
    result = trainer.fit(callback=lambda *a: seen.append(a), should_stop=lambda: len(seen) >= 3)
    assert result.stopped_early and result.step == 3 and len(result.losses) == 3
    assert [s[:2] for s in seen] == [(1, 50), (2, 50), (3, 50)]
    assert all(s[2] > 0 and s[3] >= 0 for s in seen)
    assert load_checkpoint(tmp_path / "last.pt").step == 3
    assert (tmp_path / "checkpoints" / "step-0000003.pt").is_file()
    lines = [json.loads(x) for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert [set(x) for x in lines] == [{"step", "loss", "lr", "time_s"}] * 3


def test_caller_rng_is_left_alone(toy16, tmp_path):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    Trainer(seeded_model(small_config(), 0), toy16, quick(max_steps=2), tmp_path, device="cpu").fit()
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_datasets_are_input_errors(tmp_path):
    model = seeded_model(small_config(), 0)
    with pytest.raises(InputError, match="empty"):
        Trainer(model, InMemoryPairs([], []), quick(), tmp_path, device="cpu")
    with pytest.raises(InputError, match="do not match"):
        InMemoryPairs([torch.zeros(16, 16, 16)], [torch.zeros(16, 16, 8, dtype=torch.long)])
    odd = make_toy_pairs(1, (18, 18, 18))
    with pytest.raises(InputError, match="divisible by 4"):
        Trainer(model, odd, quick(), tmp_path, device="cpu")
    other = make_toy_pairs(1, (32, 32, 32))
    with pytest.raises(InputError, match="model grid"):
        Trainer(model, other, quick(), tmp_path, device="cpu")

    class Mismatch(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"ct": torch.zeros(1, 16, 16, 16), "layout": torch.zeros(16, 16, 8, dtype=torch.long)}

    with pytest.raises(InputError, match="differs from layout size"):
        Trainer(model, Mismatch(), quick(), tmp_path, device="cpu")
    with pytest.raises(InputError, match="normalised"):
        InMemoryPairs([torch.full((16, 16, 16), 500.0)], [torch.zeros(16, 16, 16, dtype=torch.long)])


def test_bf16_on_cpu_is_refused(toy16, tmp_path):
    with pytest.raises(InputError, match="CUDA"):
        Trainer(seeded_model(small_config(), 0), toy16, quick(precision="bf16"), tmp_path, device="cpu")


def test_resume_errors_are_checkpoint_errors(toy16, tmp_path):
    model = seeded_model(small_config(), 0)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(model, toy16, quick(), tmp_path / "empty", device="cpu", resume=True)
    assert Trainer(model, toy16, quick(), tmp_path / "empty", device="cpu", resume="auto").step == 0
    Trainer(model, toy16, quick(max_steps=1), tmp_path / "run", device="cpu").fit()
    wide = ModelConfig(
        unet=UNetConfig(model_channels=8, channel_mult=(1, 2, 2), attention_levels=()),
        grid=GRID,
        normalization="hu-window",
    )
    with pytest.raises(CheckpointError, match="another model configuration"):
        Trainer(seeded_model(wide, 0), toy16, quick(), tmp_path / "run", device="cpu", resume=True)
    save_checkpoint(tmp_path / "plain" / "last.pt", model)  # weights only, no trainer state
    with pytest.raises(CheckpointError, match="not a LungDDPM training checkpoint"):
        Trainer(model, toy16, quick(), tmp_path / "plain", device="cpu", resume=True)
    with pytest.raises(InputError):
        Trainer(DiffusionModel(preset("tiny")), toy16, quick(), tmp_path, device="cpu")


# ---------------------------------------------------------------------------------------------- divergence
def test_divergence_never_saves_non_finite_weights_and_names_the_last_finite_checkpoint(toy16, tmp_path):
    model = seeded_model(small_config(), 0)
    Trainer(model, toy16, quick(max_steps=2), tmp_path, device="cpu").fit()  # last.pt at step 2, finite

    def resumed(checkpoint_every: int, lr: float = 1e-3) -> Trainer:
        cfg = quick(max_steps=10, checkpoint_every=checkpoint_every, lr=lr)
        return Trainer(model, toy16, cfg, tmp_path, device="cpu", resume=True)

    # An update that overflows (the loss before it was finite) leaves inf weights; the save after it refuses them.
    trainer = resumed(checkpoint_every=1)

    def overflow(step: int, *_: float) -> None:
        with torch.no_grad():
            next(trainer.model.parameters()).view(-1)[0] = float("inf")

    with pytest.raises(TrainingDiverged, match=r"weights became non-finite .* by step 3; they were not saved") as info:
        trainer.fit(callback=overflow)
    assert f"resume from {tmp_path / 'last.pt'} (step 2, the last checkpoint with finite weights" in str(info.value)
    assert load_checkpoint(tmp_path / "last.pt", weights="model").step == 2  # loads: finite, not overwritten
    assert not (tmp_path / "checkpoints" / "step-0000003.pt").exists()
    # A learning rate of 1e37 sends the weights to ~1e37: the next loss overflows, and the advice still names
    # the finite file, not the state in memory.
    with pytest.warns(RuntimeWarning, match="changed training settings"):
        trainer = resumed(checkpoint_every=1000, lr=1e37)
    with pytest.raises(TrainingDiverged, match=r"the training loss became (nan|inf) at step 4; lower lr") as info:
        trainer.fit()
    assert f"resume from {tmp_path / 'last.pt'} (step 2" in str(info.value)
    assert load_checkpoint(tmp_path / "last.pt", weights="model").step == 2


def test_resume_refuses_a_checkpoint_with_non_finite_weights(toy16, tmp_path):
    model = seeded_model(small_config(), 0)
    Trainer(model, toy16, quick(max_steps=1), tmp_path, device="cpu").fit()
    data = read_checkpoint_file(tmp_path / "last.pt")
    key = next(iter(data["ema"]))
    data["ema"][key] = torch.full_like(data["ema"][key], float("nan"))
    torch.save(data, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=f"non-finite weights .* ema tensor '{key}'"):
        Trainer(model, toy16, quick(), tmp_path, device="cpu", resume=True)


def test_a_fresh_run_does_not_append_to_an_earlier_runs_log(toy16, tmp_path):
    """A run stopped before its first checkpoint leaves loss lines but no last.pt; the next run starts at step 1."""
    model = seeded_model(small_config(), 0)
    Trainer(model, toy16, quick(max_steps=3), tmp_path, device="cpu").fit()
    (tmp_path / "last.pt").unlink()
    Trainer(model, toy16, quick(max_steps=2), tmp_path, device="cpu", resume="auto").fit()
    steps = [json.loads(x)["step"] for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_resume_applies_a_changed_learning_rate(toy16, tmp_path):
    """The advice after a divergence is "lower lr, then resume": the saved optimiser state must not undo that."""
    model = seeded_model(small_config(), 0)
    Trainer(model, toy16, quick(max_steps=1), tmp_path, device="cpu").fit()
    with pytest.warns(RuntimeWarning, match="changed training settings"):
        resumed = Trainer(model, toy16, quick(max_steps=2, lr=1e-5), tmp_path, device="cpu", resume=True)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [1e-5]
    resumed.fit()
    assert json.loads((tmp_path / "loss.jsonl").read_text().splitlines()[-1])["lr"] == 1e-5
