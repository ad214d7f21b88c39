"""The powered downstream design: size bins, test nodules, seed ranges, early stopping, evidence, resume, the
combine step and the generated tables (the bootstrap: test_downstream_bootstrap.py)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

from LungDDPMLib.downstream import DownstreamConfig, run_downstream
from LungDDPMLib.downstream.combine import combine_runs, design_grid, load_runs
from LungDDPMLib.downstream.data import Case
from LungDDPMLib.downstream.design import (
    SIZE_BINS,
    TEST_DIAMETERS,
    equivalent_diameter_mm,
    held_out_cell,
    held_out_specs,
    size_bin,
    synthetic_source,
)
from LungDDPMLib.downstream.early_stop import EarlyStopping
from LungDDPMLib.downstream.evidence import match_intensity, nodule_intensity
from LungDDPMLib.downstream.metrics import nodule_records
from LungDDPMLib.downstream.runs import fingerprint, load_finished, run_file
from LungDDPMLib.errors import InputError

# --- design: size bins, test nodules, seed ranges ----------------------------------------------------------------


def test_size_bins_and_equivalent_diameter() -> None:
    assert [size_bin(d) for d in (3.0, 5.99, 6.0, 9.99, 10.0, 19.99, 20.0, 29.0)] == [
        "3-6",
        "3-6",
        "6-10",
        "6-10",
        "10-20",
        "10-20",
        ">20",
        ">20",
    ]
    assert equivalent_diameter_mm(1, (1.0, 1.0, 1.0)) == pytest.approx((6 / math.pi) ** (1 / 3))
    # A voxelised 12 mm ball at 1.5 x 0.8 x 0.8 mm: about 12 mm, bin 10-20; a 5 mm one: bin 3-6.
    for diameter, expected in ((12.0, "10-20"), (5.0, "3-6"), (22.0, ">20")):
        spacing = (1.5, 0.8, 0.8)
        grid = np.indices((40, 64, 64)).astype(float)
        centre = (20, 32, 32)
        r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing))
        classes = np.where(r2 <= (diameter / 2) ** 2, 5, 0).astype(np.uint8)
        (record,) = nodule_records(classes > 0, classes, spacing)
        assert record["diameter_mm"] == pytest.approx(diameter, rel=0.05)
        assert record["size_bin"] == expected and record["class"] == "ground-glass" and record["detected"]


def test_test_nodules_fill_every_class_and_size_bin_evenly() -> None:
    cells = [held_out_cell(g) for g in range(60)]  # 20 phantoms x 3 nodules
    counts = {(k, b): cells.count((k, b)) for k in ("solid", "part-solid", "ground-glass") for b in range(4)}
    assert set(counts.values()) == {5}
    specs = [s for i in range(20) for s in held_out_specs(i, 3, np.random.default_rng(i))]
    for spec, (kind, b) in zip(specs, cells):
        lo, hi = TEST_DIAMETERS[b]
        assert spec.kind == kind and lo <= spec.diameter_mm <= hi
        assert size_bin(spec.diameter_mm) == SIZE_BINS[b]


def test_seed_ranges_of_the_four_sets_never_overlap() -> None:
    for n_real in (4, 8):
        cfg = DownstreamConfig(n_real=n_real, multiples=(0, 1, 2, 4), n_test=20, n_validation=4, patience=4)
        used = {
            "real": set(range(cfg.real_seed, cfg.real_seed + n_real)),
            "validation": set(range(cfg.validation_seed, cfg.validation_seed + 4)),
            "test": set(range(cfg.test_seed, cfg.test_seed + 20)),
            "synthetic": {synthetic_source(i, n_real, cfg.real_seed, cfg.synthetic_seed)[1] for i in range(4 * n_real)},
        }
        assert len(used["synthetic"]) == 4 * n_real  # every synthetic layout its own seed
        for (a, sa), (b, sb) in itertools.combinations(used.items(), 2):
            assert not sa & sb, (a, b)
        declared = {k: range(first, first + n) for k, first, n in cfg.seed_ranges()}
        assert all(set(declared[k]) >= used[k] for k in used)
    # The 4-real synthetic cases are those of 8 real cases whose anatomy is one of the first four.
    four = {synthetic_source(i, 4, 2000, 4000) for i in range(16)}
    eight = {synthetic_source(i, 8, 2000, 4000) for i in range(32)}
    assert four == {s for s in eight if s[0] < 2004} and len(eight) == 32
    with pytest.raises(InputError, match="overlap"):
        DownstreamConfig(n_validation=10, validation_seed=2995, test_seed=3000)
    with pytest.raises(InputError, match="overlap"):
        DownstreamConfig(n_real=8, multiples=(0, 4), synthetic_seed=4000, test_seed=4100)
    with pytest.raises(InputError, match="validation phantoms"):
        DownstreamConfig(patience=3)


# --- early stopping ----------------------------------------------------------------------------------------------


def test_early_stopping_picks_the_best_step_of_a_scripted_curve() -> None:
    stop = EarlyStopping(patience=3)
    curve = [0.9, 0.8, 0.6, 0.65, 0.55, 0.56, 0.57, 0.58, 0.2]  # stops at the 8th point, before the late dip
    stopped_at = next(i for i, v in enumerate(curve) if stop.update(100 * (i + 1), v))
    assert stopped_at == 7 and stop.best_step == 500 and stop.best == 0.55
    assert [s for s, _ in stop.curve] == [100 * (i + 1) for i in range(8)]
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)


@pytest.mark.parametrize("stop_on", ["loss", "dice"])
def test_training_returns_the_weights_of_the_best_validation(monkeypatch: pytest.MonkeyPatch, stop_on: str) -> None:
    """A scripted validation curve: training stops after ``patience`` evaluations without improvement and the
    network holds exactly the weights it had at the best evaluation (lowest loss, or highest Dice)."""
    import LungDDPMLib.downstream.early_stop as early_stop
    from LungDDPMLib.downstream.train import train_segnet

    losses = [1.0, 0.7, 0.5, 0.6, 0.55, 0.52, 0.9, 0.1]
    script = iter(losses)
    seen: List[Dict[str, torch.Tensor]] = []

    def scripted(net, patches, loss_fn, device, batch=8):
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        value = next(script)
        # with stop_on="dice" the loss is flat and the Dice carries the curve (1 - loss: best at the same point)
        return {"loss": value if stop_on == "loss" else 0.3, "dice": 1.0 - value}

    monkeypatch.setattr(early_stop, "validation_score", scripted)
    case = _case(True, 0)
    val = (np.zeros((2, 1, 8, 8, 8), np.float32), np.zeros((2, 1, 8, 8, 8), np.float32))
    result = train_segnet(
        [[case]],
        [1.0],
        steps=100,
        batch_size=1,
        patch=(8, 8, 8),
        seed=0,
        validation=val,
        eval_every=2,
        patience=3,
        stop_on=stop_on,
    )
    assert result.best_step == 6 and result.steps_run == 12  # evaluations at 2, 4, ... ; best the third
    assert [s for s, *_ in result.validation_curve] == [2, 4, 6, 8, 10, 12]
    assert all(torch.equal(v, seen[2][k]) for k, v in result.net.state_dict().items())
    assert not all(torch.equal(v, seen[-1][k]) for k, v in result.net.state_dict().items())


# --- evidence ----------------------------------------------------------------------------------------------------


def _case(nodule: bool, seed: int, value: float = 0.6, label: int = 3) -> Case:
    grid = np.indices((24, 24, 24))
    mask = sum((g - 12) ** 2 for g in grid) <= 9 if nodule else np.zeros((24, 24, 24), bool)
    rng = np.random.default_rng(seed)
    image = np.where(mask, value + 0.05 * rng.standard_normal(mask.shape), 0.1).astype(np.float32)
    lung = np.ones((24, 24, 24), bool)
    return Case(image, mask, np.flatnonzero(lung), np.flatnonzero(mask), "real", seed, np.where(mask, label, 0))


def test_intensity_matching_moves_synthetic_nodules_to_the_real_class_statistics() -> None:
    real = [_case(True, 0, value=0.5), _case(True, 1, value=0.52)]
    synthetic = [_case(True, 2, value=0.8), _case(True, 3, value=0.75)]
    matched = match_intensity(synthetic, real)
    want, got = nodule_intensity(real)["solid"], nodule_intensity(matched)["solid"]
    assert got["mean"] == pytest.approx(want["mean"], abs=0.5) and got["sd"] == pytest.approx(want["sd"], abs=0.5)
    assert nodule_intensity(synthetic)["solid"]["mean"] > want["mean"] + 300
    assert all(np.array_equal(m.nodule, s.nodule) for m, s in zip(matched, synthetic))
    assert np.array_equal(matched[0].image[~synthetic[0].nodule], synthetic[0].image[~synthetic[0].nodule])


def test_evaluation_histograms_every_lung_box_voxel() -> None:
    from LungDDPMLib.downstream.segnet import SegNet3D
    from LungDDPMLib.downstream.train import evaluate

    case = _case(True, 0)
    hist: Dict[str, List[int]] = {}
    out = evaluate(SegNet3D(seed=0), [case], (8, 16, 16), torch.device("cpu"), histogram=hist)
    assert sum(hist["nodule"]) == case.nodule.sum() and sum(hist["nodule"]) + sum(hist["background"]) == 24**3
    assert out[0]["nodule_list"][0]["class"] == "solid"


# --- resume, combine, tables -------------------------------------------------------------------------------------


class _Dummy:
    class config:  # noqa: N801 - stands in for a model's config
        spatial_mode = "roi"
        preset = "dummy"


def _fake_record(config: DownstreamConfig, cases: Any, multiple: float, seed: int, device: Any, say: Any):
    """What train_and_score returns, with numbers that depend on arm and seed only."""
    from LungDDPMLib.downstream.experiment import arm_name

    records = []
    for c in range(4):
        found = (seed + c + int(multiple)) % 3 != 0
        nodules = [{"class": "solid", "diameter_mm": 8.0, "size_bin": "6-10", "detected": found, "dice": 0.5 * found}]
        records.append(
            {
                "case_seed": 3000 + c,
                "dice": 0.1 * (c + 1) + 0.01 * multiple,
                "false_positives": c + seed,
                "nodules": 1,
                "detected": int(found),
                "nodule_list": nodules,
            }
        )
    return {
        "segnet": config.segnet,
        "n_real": config.n_real,
        "arm": arm_name(multiple),
        "multiple": multiple,
        "seed": seed,
        "best_step": 100,
        "steps_run": 300,
        "train_s": 1.0,
        "eval_s": 1.0,
        "cases": records,
    }


@pytest.fixture
def fake_experiment(monkeypatch: pytest.MonkeyPatch):
    import LungDDPMLib.downstream.cases as cases_module
    import LungDDPMLib.downstream.experiment as experiment

    calls: List[tuple] = []

    def record(config, cases, multiple, seed, device, say):
        calls.append((multiple, seed))
        return _fake_record(config, cases, multiple, seed, device, say)

    monkeypatch.setattr(cases_module, "load_model", lambda config, model, device: (_Dummy, {"source": "dummy"}))
    monkeypatch.setattr(
        cases_module, "build_cases", lambda *a: ({}, {"timing": {}, "synthetic_cases": [], "cache": None})
    )
    monkeypatch.setattr(experiment, "train_and_score", record)
    return calls


def test_resume_skips_finished_runs_and_redoes_a_half_written_one(tmp_path: Path, fake_experiment: list) -> None:
    cfg = DownstreamConfig(segnet="own", multiples=(0, 1), repeats=2, device="cpu", out=str(tmp_path))
    run_downstream(cfg)
    assert len(fake_experiment) == 4
    files = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert files == [f"own-real4-{a}-seed{s}.json" for a in ("real+1x", "real") for s in (0, 1)]
    run_downstream(cfg)
    assert len(fake_experiment) == 4  # nothing trained again
    half = run_file(tmp_path, "own", 4, "real+1x", 1)
    half.write_text(half.read_text()[:200])  # a crash mid-write (outside our atomic writer)
    again = run_downstream(cfg)
    assert fake_experiment[4:] == [(1, 1)] and len(again["runs"]) == 4
    assert load_finished(half, fingerprint(cfg))["seed"] == 1
    with pytest.raises(InputError, match="other settings"):
        run_downstream(DownstreamConfig(segnet="own", multiples=(0, 1), repeats=2, out=str(tmp_path), lr=5e-3))
    # A chunk with other seeds adds its runs beside these; the combine step sees all, and what is missing.
    run_downstream(DownstreamConfig(segnet="own", multiples=(0, 1), seed=2, repeats=1, device="cpu", out=str(tmp_path)))
    (tmp_path / "runs" / "own-real4-real-seed9.json").write_text('{"complete": tr')  # half-written: not done
    runs = load_runs([tmp_path])
    summary = combine_runs(runs, design_grid(("own",), (4,), ("real", "real+1x"), range(4)), n_boot=200)
    assert summary["missing"] == ["own-real4-real-seed3", "own-real4-real+1x-seed3"]
    assert summary["groups"]["own/real4"]["arms"]["real"]["seeds"] == [0, 1, 2]


def test_time_budget_stops_between_runs_and_the_rerun_goes_on(tmp_path: Path, fake_experiment: list) -> None:
    cfg = DownstreamConfig(segnet="own", multiples=(0, 1), repeats=2, device="cpu", out=str(tmp_path))
    first = run_downstream(cfg, time_budget_s=1e-9)  # one run always starts; then the budget is spent
    assert len(first["runs"]) == 1 and first["left"] == [
        "own-real4-real+1x-seed0", "own-real4-real-seed1", "own-real4-real+1x-seed1"
    ]  # fmt: skip
    second = run_downstream(cfg)
    assert fake_experiment == [(0, 0), (1, 0), (0, 1), (1, 1)] and not second["left"] and len(second["runs"]) == 4


def test_combine_numbers_and_the_table_reproduce_the_json(tmp_path: Path, fake_experiment: list) -> None:
    combine_script, table_script = _script("downstream_combine"), _script("downstream_table")
    cfg = DownstreamConfig(segnet="own", multiples=(0, 2), repeats=3, device="cpu", out=str(tmp_path / "a"))
    run_downstream(cfg)
    summary_path = tmp_path / "summary.json"
    assert combine_script.main([str(tmp_path / "a"), "--out", str(summary_path), "--replicates", "300"]) == 0
    summary = json.loads(summary_path.read_text())
    group = summary["groups"]["own/real4"]
    # Dice: mean over 3 seeds x 4 cases of 0.1 (c + 1) + 0.01 m; sensitivity: detected share, by hand.
    assert group["arms"]["real"]["dice"]["estimate"] == pytest.approx(0.25)
    assert group["differences"]["real+2x"]["dice"]["estimate"] == pytest.approx(0.02)
    found = [(s + c) % 3 != 0 for s in range(3) for c in range(4)]
    assert group["arms"]["real"]["sensitivity"]["estimate"] == pytest.approx(np.mean(found))
    assert group["arms"]["real"]["sensitivity_6-10mm"]["estimate"] == pytest.approx(np.mean(found))
    assert group["arms"]["real"]["sensitivity_>20mm"]["estimate"] is None
    assert group["arms"]["real"]["false_positives"]["estimate"] == pytest.approx(
        np.mean([c + s for s in range(3) for c in range(4)])
    )
    text = _capture(table_script.main, [str(summary_path)])
    rows: Dict[str, str] = {}
    for line in text.splitlines():  # the first table (Dice, sensitivity, FP...) has each arm's first row
        if line.startswith("| real"):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    for arm, stats in group["arms"].items():
        d = stats["dice"]
        assert f"{d['estimate']:.3f} [{d['low']:.3f}, {d['high']:.3f}]" in rows[arm]
        assert f"{stats['false_positives']['estimate']:.1f} [" in rows[arm]
    diff = group["differences"]["real+2x"]["dice"]
    assert f"{diff['estimate']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" in rows["real+2x - real"]
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- BEGIN downstream-table -->\nold table\n<!-- END downstream-table -->\nrest\n")
    assert table_script.main([str(summary_path), "--into", str(doc)]) == 0
    assert doc.read_text() == f"intro\n<!-- BEGIN downstream-table -->\n{text}<!-- END downstream-table -->\nrest\n"
    assert "missing: 74" in text  # 80 runs in the design, 6 done (own, 4 real, real and +2x, seeds 0-2)


def test_combine_refuses_a_run_counted_twice_or_a_pilot_with_other_settings(
    tmp_path: Path, fake_experiment: list, capsys: pytest.CaptureFixture
) -> None:
    combine_script = _script("downstream_combine")
    run_downstream(DownstreamConfig(segnet="own", multiples=(0,), repeats=1, device="cpu", out=str(tmp_path / "a")))
    pilot = tmp_path / "pilot-real4" / "runs"
    pilot.mkdir(parents=True)
    record = json.loads((tmp_path / "a" / "runs" / "own-real4-real-seed0.json").read_text())
    (pilot / "own-real4-real-seed0.json").write_text(json.dumps(record))
    argv = [str(tmp_path / "a"), str(tmp_path / "pilot-real4"), "--out", str(tmp_path / "s.json")]
    assert combine_script.main(argv) == 2
    assert "own-real4-real-seed0 found twice" in capsys.readouterr().err
    record.update(seed=1, fingerprint="0123456789abcdef")  # a pilot's run made with other settings
    (pilot / "own-real4-real-seed0.json").write_text(json.dumps(record))
    assert combine_script.main(argv) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and str(pilot / "own-real4-real-seed0.json") in err
    assert not (tmp_path / "s.json").exists()


def _script(name: str) -> Any:
    """A benchmarks/ script as a module (benchmarks/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _capture(fn, argv) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert fn(argv) == 0
    return buffer.getvalue()


@pytest.mark.skipif(importlib.util.find_spec("monai") is None, reason="MONAI (the seg extra) is not installed")
def test_monai_dice_reduction_hook_scores_a_nodule_free_patch_differently() -> None:
    """A perfect prediction on one nodule patch and one empty patch: MONAI's default per-patch Dice calls the empty
    patch a near-total miss (loss about 0.5 over the two), the batch reduction does not."""
    from LungDDPMLib.downstream.train import make_segnet

    target = torch.zeros(2, 1, 8, 16, 16)
    target[0, 0, 2:6, 4:12, 4:12] = 1.0
    logits = target * 20 - 10  # background probability 4.5e-5: what a trained network gives
    _, per_patch = make_segnet("monai", 0, monai_dice="per-patch")
    _, batch = make_segnet("monai", 0, monai_dice="batch")
    assert float(per_patch(logits, target)) > 0.45 and float(batch(logits, target)) < 0.05
    with pytest.raises(InputError, match="monai_dice"):
        make_segnet("monai", 0, monai_dice="both")


def test_cli_powered_design_selects_a_chunk() -> None:
    import argparse

    from LungDDPMLib.commands import downstream as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["downstream", "--powered", "--segnet", "own", "--real", "8", "--seed", "3", "--repeats", "2"]
    )
    cfg = command.config_from_args(args)
    assert (cfg.segnet, cfg.n_real, cfg.seed, cfg.repeats) == ("own", 8, 3, 2)
    assert (cfg.n_test, cfg.test_nodules, cfg.n_validation, cfg.multiples) == (20, 3, 4, (0, 1, 2, 4))
    assert cfg.patience is not None and cfg.n_test * cfg.test_nodules >= 60
    with pytest.raises(InputError, match="exclude"):
        command.config_from_args(parser.parse_args(["downstream", "--powered", "--quick"]))
