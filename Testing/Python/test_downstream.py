"""The downstream experiment: segmentation net, metrics with known answers, patches, and a tiny run end to end."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch

from LungDDPMLib.checkpoint import save_checkpoint
from LungDDPMLib.cli import main
from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.downstream import (
    DownstreamConfig,
    SegNet3D,
    dice,
    dice_bce_loss,
    mean_sd,
    normalize_ct,
    run_downstream,
)
from LungDDPMLib.downstream.data import Case, draw_batch
from LungDDPMLib.downstream.metrics import by_class, case_metrics, detection
from LungDDPMLib.errors import InputError

TINY = {
    "n_real": 2,
    "multiples": (0, 1),
    "n_test": 2,
    "steps": 6,
    "batch_size": 2,
    "patch": (16, 32, 32),
    "phantom_size": (64, 64, 48),
    "phantom_spacing": (3.2, 3.2, 5.0),
    "sampler_steps": 2,
    "device": "cpu",
    "mode": "full",
    "segnet": "own",
    "repeats": 1,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: one thread is as fast, and far faster when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ball(shape: tuple, centre: tuple, radius: float) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


@pytest.mark.parametrize("shape", [(2, 1, 16, 16, 16), (1, 1, 12, 20, 8), (1, 1, 7, 9, 11)])
def test_segnet_keeps_the_input_size(shape: tuple) -> None:
    out = SegNet3D(seed=0)(torch.zeros(shape))
    assert out.shape == (shape[0], 1, *shape[2:])


def test_segnet_weights_depend_on_the_seed_only() -> None:
    state = torch.random.get_rng_state()
    a, b, c = SegNet3D(seed=3), SegNet3D(seed=3), SegNet3D(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_segnet_channels_last_computes_what_the_plain_layout_does() -> None:
    """The channels-last layout is a speed choice only: the same U-Net written out with plain (contiguous) tensors and
    the same weights gives the same logits and the same gradients."""
    import torch.nn.functional as F

    net = SegNet3D(seed=5)
    x = torch.rand(2, 1, 12, 20, 16, generator=torch.Generator().manual_seed(0))
    weights = {k: v.detach().contiguous().requires_grad_() for k, v in net.named_parameters()}

    def conv_block(prefix: str, h: torch.Tensor) -> torch.Tensor:
        for conv, norm in ((0, 1), (3, 4)):
            h = F.conv3d(h, weights[f"{prefix}.{conv}.weight"], padding=1)
            h = F.instance_norm(h, weight=weights[f"{prefix}.{norm}.weight"], bias=weights[f"{prefix}.{norm}.bias"])
            h = F.leaky_relu(h, 0.01)
        return h

    skips, h = [], x
    for i in range(len(net.down)):
        h = conv_block(f"down.{i}", h if i == 0 else F.max_pool3d(h, 2))
        skips.append(h)
    for i in reversed(range(len(net.up))):
        h = F.interpolate(h, size=skips[i].shape[2:], mode="trilinear", align_corners=False)
        h = conv_block(f"up.{i}", torch.cat([skips[i], h], dim=1))
    plain = F.conv3d(h, weights["head.weight"], weights["head.bias"])
    assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in net.parameters() if w.dim() == 5)
    out = net(x)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    out.square().mean().backward()
    plain.square().mean().backward()
    for k, p in net.named_parameters():
        torch.testing.assert_close(p.grad, weights[k].grad, rtol=1e-4, atol=1e-6, msg=k)


def test_segnet_overfits_one_patch() -> None:
    target = _ball((16, 16, 16), (8, 7, 9), 4.0)
    rng = np.random.default_rng(0)
    image = np.where(target, 0.7, 0.15) + 0.03 * rng.standard_normal(target.shape)
    x = torch.from_numpy(image[None, None].astype(np.float32))
    y = torch.from_numpy(target[None, None].astype(np.float32))
    net = SegNet3D(seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = dice_bce_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        pred = (torch.sigmoid(net(x)) > 0.5).numpy()[0, 0]
    assert losses[-1] < 0.75 * losses[0]
    assert dice(pred, target) > 0.8


def test_dice_known_answers() -> None:
    truth = np.zeros((4, 4, 8), bool)
    truth[:, :, :4] = True
    shifted = np.roll(truth, 2, axis=2)  # half of it overlaps
    assert dice(truth, truth) == 1.0
    assert dice(~truth, truth) == 0.0
    assert dice(shifted, truth) == pytest.approx(0.5)
    assert dice(np.zeros_like(truth), np.zeros_like(truth)) is None  # not applicable, left out of means
    assert dice(truth, np.zeros_like(truth)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        dice(truth, truth[:2])


def test_per_class_scores_known_answers() -> None:
    solid = _ball((20, 20, 20), (5, 5, 5), 2.5)
    glass = _ball((20, 20, 20), (14, 14, 14), 2.5)
    classes = np.where(solid, 3, 0) + np.where(glass, 5, 0)
    pred = solid.copy()  # finds the solid nodule exactly, misses the ground-glass one
    got = by_class(pred, classes)
    assert got["solid"] == {"nodules": 1, "detected": 1, "sensitivity": 1.0, "dice": 1.0}
    assert got["ground-glass"] == {"nodules": 1, "detected": 0, "sensitivity": 0.0, "dice": 0.0}
    assert got["part-solid"] == {"nodules": 0, "detected": 0, "sensitivity": None, "dice": None}
    m = case_metrics(pred, solid | glass, classes)
    assert m["sensitivity"] == 0.5 and m["sensitivity_solid"] == 1.0 and m["dice_ground-glass"] == 0.0


def test_detection_counts_nodules_and_false_positive_components() -> None:
    truth = _ball((20, 20, 20), (5, 5, 5), 2.5) | _ball((20, 20, 20), (14, 14, 14), 2.5)
    pred = np.zeros_like(truth)
    pred[5, 5, 5] = True  # one voxel in the first nodule detects it
    pred[1:3, 15:18, 1:3] = True  # one blob away from every nodule
    assert detection(pred, truth) == {"nodules": 2, "detected": 1, "sensitivity": 0.5, "false_positives": 1}
    empty = detection(pred, np.zeros_like(truth))
    assert empty["sensitivity"] is None and empty["false_positives"] == 2
    assert mean_sd([1.0, None, 3.0]) == {"mean": 2.0, "sd": pytest.approx(np.sqrt(2.0)), "n": 2}


def _case(nodule: bool, seed: int) -> Case:
    mask = _ball((24, 24, 24), (12, 12, 12), 3.0) if nodule else np.zeros((24, 24, 24), bool)
    lung = np.ones((24, 24, 24), bool)
    return Case(mask.astype(np.float32), mask, np.flatnonzero(lung), np.flatnonzero(mask), "real", seed)


def test_draw_batch_is_seeded_and_honours_positive_patches() -> None:
    pools = [[_case(True, 0), _case(False, 1)]]
    a = draw_batch(pools, [1.0], 6, (8, 8, 8), 1.0, np.random.default_rng(5))
    b = draw_batch(pools, [1.0], 6, (8, 8, 8), 1.0, np.random.default_rng(5))
    assert a[0].shape == (6, 1, 8, 8, 8) and a[1].dtype == np.float32
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert all(t.any() for t in a[1])  # positive draws move to the case that has a nodule
    with pytest.raises(InputError):
        draw_batch([[], pools[0]], [0.5, 0.5], 2, (8, 8, 8), 0.5, np.random.default_rng(0))


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(InputError, match="n_real"):
        DownstreamConfig(n_real=0)
    with pytest.raises(InputError, match="overlap"):
        DownstreamConfig(n_real=20, real_seed=2990, test_seed=3000)
    with pytest.raises(InputError, match="synthetic_fraction"):
        DownstreamConfig(synthetic_fraction=1.0)
    with pytest.raises(InputError, match="multiples"):
        DownstreamConfig(multiples=(0, -1))
    with pytest.raises(InputError, match="whole number of cases"):
        DownstreamConfig(n_real=3, multiples=(0, 0.5))
    with pytest.raises(InputError, match="divisible by 8"):
        DownstreamConfig(patch=(20, 48, 48))
    with pytest.raises(InputError, match="types"):
        DownstreamConfig(types="maybe")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiffusionModel(preset("tiny", crop="lung"))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", model, ema=model)


@pytest.fixture(scope="module")
def tiny_run(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    out = tmp_path_factory.mktemp("downstream")
    return run_downstream(DownstreamConfig(**TINY, checkpoint=str(tiny_checkpoint), out=str(out)))


def test_tiny_experiment_writes_both_arms(tiny_run: Dict[str, Any]) -> None:
    out = Path(tiny_run["outputs"]["json"]).parent
    assert sorted(p.name for p in out.iterdir()) == ["downstream.csv", "downstream.json", "runs", "synthetic-cache"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no temporary left
    saved = json.loads((out / "downstream.json").read_text())
    assert [r["arm"] for r in saved["runs"]] == ["real", "real+1x"]
    assert saved["config"]["n_real"] == 2 and saved["model"]["preset"] == "tiny"
    assert saved["seeds"]["real"] == [2000, 2001] and saved["seeds"]["test"] == [3000, 3001]
    rows = list(csv.DictReader((out / "downstream.csv").open()))
    assert len(rows) == 2 * 2 and {r["arm"] for r in rows} == {"real", "real+1x"}
    # One nodule of each class per test case; at these 3.2 x 3.2 x 5 mm voxels a 4-6 mm one may leave no voxel ("").
    part_solid = [r["sensitivity_part-solid"] for r in rows]
    assert set(part_solid) <= {"", "0.0", "1.0"} and any(part_solid)
    assert set(saved["summary"]["arms"]) == {"real", "real+1x"}
    assert saved["summary"]["differences"]["real+1x"]["dice"]["n"] == 1
    real, mixed = saved["runs"]
    assert real["train_cases"] == {"real": 2, "synthetic": 0} and mixed["train_cases"] == {"real": 2, "synthetic": 2}
    assert real["items_per_pool"] == [6 * 2] and sum(mixed["items_per_pool"]) == 6 * 2
    assert mixed["items_per_pool"][1] > 0  # the second arm really saw synthetic patches


def test_tiny_experiment_is_deterministic_and_reuses_its_cache(tiny_run: Dict[str, Any], tiny_checkpoint: Path) -> None:
    again = run_downstream(DownstreamConfig(**TINY, checkpoint=str(tiny_checkpoint)))
    keys = ("arm", "seed", "cases", "losses", "items_per_pool")
    assert [{k: r[k] for k in keys} for r in again["runs"]] == [{k: r[k] for k in keys} for r in tiny_run["runs"]]
    assert "outputs" not in again and not any(c["cached"] for c in again["synthetic_cases"])
    cached = run_downstream(
        DownstreamConfig(**TINY, checkpoint=str(tiny_checkpoint), cache=str(Path(tiny_run["synthetic_cache"]).parent))
    )
    assert all(c["cached"] for c in cached["synthetic_cases"])
    assert [{k: r[k] for k in keys} for r in cached["runs"]] == [{k: r[k] for k in keys} for r in tiny_run["runs"]]


def test_cli_rejects_bad_counts_and_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["downstream", "--real", "0", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: --real must be >= 1, got 0"
    assert main(["downstream", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint not found") and "\n" not in err
    assert not any(tmp_path.iterdir())


def _roi_checkpoint(folder: Path) -> Path:
    from LungDDPMLib.config import NODULE_TYPES, TYPED_LAYOUT_CHANNELS, ModelConfig, UNetConfig

    unet = UNetConfig(model_channels=8, channel_mult=(1, 2), attention_levels=(), layout_channels=TYPED_LAYOUT_CHANNELS)
    cfg = ModelConfig(
        unet=unet, grid=(8, 16, 16), normalization="hu-window", spatial_mode="roi", nodule_types=NODULE_TYPES
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiffusionModel(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape) * 0.05)
    return save_checkpoint(folder / "roi.pt", model, ema=model)


def test_roi_synthetic_cases_are_new_nodules_in_the_real_phantoms(tmp_path: Path) -> None:
    """Each synthetic case keeps its real phantom's anatomy away from the nodules, bit for bit; withholding the
    classes (types off) changes what the model is told but not the target."""
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from LungDDPMLib.data.spatial import nodule_boxes
    from LungDDPMLib.downstream.cases import load_model, make_synthetic
    from LungDDPMLib.phantom import make_phantom

    ckpt = _roi_checkpoint(tmp_path)
    cfg = DownstreamConfig(**{**TINY, "mode": "roi", "multiples": (0, 2)}, checkpoint=str(ckpt))
    model, _ = load_model(cfg, None, torch.device("cpu"))
    cases = [make_synthetic(cfg, model, i, None) for i in range(3)]
    # Withholding the classes: the model is given the nodules as label 2 only, the target keeps the classes.
    import LungDDPMLib.synthesis as synthesis

    given = []
    real_synthesize = synthesis.synthesize_case

    def spy(ct, layout, *args, **kwargs):
        given.append(np.unique(sitk.GetArrayFromImage(layout)).tolist())
        return real_synthesize(ct, layout, *args, **kwargs)

    k = next(i for i, (c, _) in enumerate(cases) if np.isin(c.classes, (4, 5)).any())
    synthesis.synthesize_case = spy
    try:
        off = make_synthetic(dataclasses.replace(cfg, types="off"), model, k, None)[0]
        make_synthetic(cfg, model, k, None)
    finally:
        synthesis.synthesize_case = real_synthesize
    assert max(given[0]) == 2 and max(given[1]) > 2, given
    for i, (case, info) in enumerate(cases):
        assert info["anatomy_of_real_seed"] == cfg.real_seed + i % cfg.n_real
        real = make_phantom(
            cfg.phantom_size, cfg.phantom_spacing, seed=info["anatomy_of_real_seed"], nodules=cfg.nodules
        )
        real_nodules = sitk.GetArrayFromImage(real.layout) >= 2
        # Away from every nodule, and outside the lung of the patches the ROI model regenerated.
        lung = np.zeros(case.image.shape, bool)
        lung.flat[case.lung_index] = True
        patches = np.zeros_like(lung)
        for box, _ in nodule_boxes(np.where(case.nodule, 2, 0), model.config.grid[::-1]):
            patches[box.slices_zyx(lung.shape)[0]] = True
        away = ~ndi.binary_dilation(case.nodule | real_nodules, iterations=4) & ~(patches & lung)
        assert away.sum() > 0.9 * away.size
        real_image = normalize_ct(sitk.GetArrayFromImage(real.ct))
        # The scanner blur spreads every nodule a little beyond 4 voxels: a few voxels differ by 1 HU.
        diff = np.abs(case.image[away] - real_image[away]) * 1400.0  # HU (normalize_ct spans 1400 HU)
        assert diff.max() <= 2.0 and (diff == 0).mean() > 0.999, (diff.max(), (diff == 0).mean())
        assert case.nodule.any() and not np.array_equal(case.nodule, real_nodules)  # new nodules
        assert {n["kind"] for n in info["nodules"]} <= {"solid", "part-solid", "ground-glass"}
    assert np.array_equal(off.nodule, cases[k][0].nodule) and np.array_equal(off.classes, cases[k][0].classes)


@pytest.mark.skipif(importlib.util.find_spec("monai") is None, reason="MONAI (the seg extra) is not installed")
def test_monai_unet_arm_runs_and_is_seeded(tmp_path: Path, tiny_checkpoint: Path) -> None:
    cfg = DownstreamConfig(
        **{**TINY, "segnet": "monai", "multiples": (0,), "steps": 3}, checkpoint=str(tiny_checkpoint)
    )
    a, b = run_downstream(cfg), run_downstream(cfg)
    assert a["runs"][0]["losses"] == b["runs"][0]["losses"] and a["runs"][0]["cases"] == b["runs"][0]["cases"]
    assert set(a["summary"]["arms"]) == {"real"} and "differences" not in a["summary"]


def test_summary_compares_each_arm_with_real_only_and_the_seed_spread() -> None:
    from LungDDPMLib.downstream.report import combine, format_table

    def run(arm: str, seed: int, dice_value: float) -> Dict[str, Any]:
        return {"arm": arm, "seed": seed, "train_s": 1.0, "cases": [{"dice": dice_value}, {"dice": dice_value}]}

    main_runs = [run("real", s, 0.30 + 0.01 * s) for s in range(3)] + [
        run("real+2x", s, 0.40 + 0.01 * s) for s in range(3)
    ]
    other = [run("real", s, 0.30 + 0.01 * s) for s in range(3)] + [run("real+2x", s, 0.31 + 0.01 * s) for s in range(3)]
    combined = combine([{"runs": main_runs}, {"runs": other}], ["main", "off"])
    assert [r["arm"] for r in combined["runs"]].count("real") == 3  # the second file's real arm is not repeated
    diffs = combined["summary"]["differences"]
    assert diffs["real+2x"]["dice"]["mean"] == pytest.approx(0.10)
    assert diffs["real+2x"]["dice"]["seed_spread"] == pytest.approx(0.01)
    assert diffs["real+2x"]["dice"]["larger_than_seed_spread"] is True
    assert diffs["off real+2x"]["dice"]["mean"] == pytest.approx(0.01)
    assert diffs["off real+2x"]["dice"]["larger_than_seed_spread"] is False  # inside the spread: no finding
    assert "off real+2x - real" in format_table(combined)


def test_early_stopped_run_records_its_curves_and_evidence(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Real components end to end: validation phantoms, early stopping, the per-run file and its evidence."""
    cfg = DownstreamConfig(
        **{**TINY, "steps": 8, "test_nodules": 3},
        n_validation=1,
        patience=2,
        eval_every=2,
        validation_patches=4,
        checkpoint=str(tiny_checkpoint),
        out=str(tmp_path),
    )
    result = run_downstream(cfg)
    saved = json.loads((tmp_path / "runs" / "own-real2-real+1x-seed0.json").read_text())
    assert saved["complete"] is True and saved["fingerprint"] == result["fingerprint"]
    steps = [s for s, *_ in saved["validation_curve"]]
    assert steps[0] == 2 and saved["best_step"] in steps and saved["steps_run"] == steps[-1] <= 8
    best = min(saved["validation_curve"], key=lambda p: p[1])
    assert saved["best_step"] == best[0]
    voxels = sum(sum(saved["probability_histogram"][k]) for k in ("nodule", "background"))
    assert voxels > 0 and sum(saved["probability_histogram"]["nodule"]) == sum(c["true_voxels"] for c in saved["cases"])
    assert set(saved["training_intensity"]) == {"real", "synthetic"}
    records = [n for c in saved["cases"] for n in c["nodule_list"]]
    # 6 asked; at these 3.2 x 3.2 x 5 mm test voxels a 3.5-6 mm nodule may fall between voxel centres.
    assert 4 <= len(records) <= 6 and {n["class"] for n in records} <= {"solid", "part-solid", "ground-glass"}
    assert all(n["size_bin"] in ("3-6", "6-10", "10-20", ">20") for n in records)
    assert result["seeds"]["validation"] == [2500] and saved["cpu_s"]["train"] > 0
    (phantoms,) = (tmp_path / "synthetic-cache").glob("phantoms-*")  # the next chunk reads them back
    assert sorted(p.name for p in phantoms.glob("*_ct.nrrd")) == [
        "real2000_ct.nrrd", "real2001_ct.nrrd", "test3000_ct.nrrd", "test3001_ct.nrrd", "validation2500_ct.nrrd"
    ]  # fmt: skip
