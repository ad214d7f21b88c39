"""The phantom-drawn ablation of the downstream experiment: its synthetic cases are the phantom generator's own drawing
of the very layouts the model draws, a new setting leaves every recorded run's fingerprint as it was, and the
cross-folder comparison reproduces the design's own paired differences."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_downstream import TINY, _roi_checkpoint

from LungDDPMLib.downstream import DownstreamConfig, normalize_ct
from LungDDPMLib.downstream.combine import compare_arms, load_runs, summarize_group
from LungDDPMLib.downstream.runs import fingerprint
from LungDDPMLib.errors import InputError

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results" / "downstream-powered"


def test_every_recorded_run_keeps_its_fingerprint_and_the_ablation_gets_its_own():
    """Runs recorded before ``synthetic_source`` existed must still resume and combine (the powered design is
    hours of CPU); an ablation run must never be taken for one of them."""
    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*/*-seed*.json"))]
    assert len(records) >= 40
    sources = set()
    for record in records:
        config = DownstreamConfig(**record["config"])
        assert fingerprint(config) == record["fingerprint"], record["config"]
        other = "model" if config.synthetic_source == "phantom" else "phantom"
        assert fingerprint(dataclasses.replace(config, synthetic_source=other)) != record["fingerprint"]
        sources.add(config.synthetic_source)
    assert "model" in sources  # the design's runs, most of them recorded before the setting existed
    with pytest.raises(InputError, match="synthetic_source"):
        DownstreamConfig(synthetic_source="gan")


def test_phantom_drawn_cases_are_the_phantoms_own_drawing_of_the_model_arms_layouts(tmp_path: Path) -> None:
    from LungDDPMLib.downstream.cases import cache_dir, load_model, make_synthetic, synthetic_layout

    ckpt = _roi_checkpoint(tmp_path)
    cfg = DownstreamConfig(**{**TINY, "mode": "roi", "multiples": (0, 1)}, checkpoint=str(ckpt))
    oracle = dataclasses.replace(cfg, synthetic_source="phantom")
    model, info = load_model(cfg, None, torch.device("cpu"))
    patch = tuple(model.config.grid)
    for i in range(2):
        drawn, _ = make_synthetic(cfg, model, i, None)
        perfect, meta = make_synthetic(oracle, model, i, None)
        ph, _, _ = synthetic_layout(cfg, i, patch)
        assert np.array_equal(perfect.image, normalize_ct(sitk.GetArrayFromImage(ph.ct)))  # the phantom's CT
        assert np.array_equal(perfect.nodule, drawn.nodule) and np.array_equal(perfect.classes, drawn.classes)
        assert meta["anatomy_of_real_seed"] == cfg.real_seed + i % cfg.n_real
        inside = drawn.nodule
        assert np.abs(perfect.image[inside] - drawn.image[inside]).mean() > 0  # the model redrew the nodules
    # Cached apart from the model's cases, keyed without the model (it draws nothing there) but with the patch
    # that every layout was redrawn to fit.
    cfg = dataclasses.replace(cfg, cache=str(tmp_path / "cache"))
    oracle = dataclasses.replace(oracle, cache=str(tmp_path / "cache"))
    assert cache_dir(oracle, info, patch) != cache_dir(cfg, info, patch)
    assert cache_dir(oracle, {**info, "sha256": "other"}, patch) == cache_dir(oracle, info, patch)
    assert cache_dir(oracle, info, patch).name.startswith("phantom-drawn-")
    assert cache_dir(oracle, info, (8, 32, 32)) != cache_dir(oracle, info, patch) != cache_dir(oracle, info, None)
    assert cache_dir(cfg, info, (8, 32, 32)) == cache_dir(cfg, info, patch)  # the model's sha256 already says it


def test_the_command_line_selects_the_ablation() -> None:
    from LungDDPMLib.commands import downstream as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    argv = ["downstream", "--powered", "--segnet", "monai", "--real", "8", "--multiples", "4"]
    cfg = command.config_from_args(parser.parse_args([*argv, "--synthetic-source", "phantom"]))
    assert (cfg.synthetic_source, cfg.multiples, cfg.n_real) == ("phantom", (4.0,), 8)
    assert command.config_from_args(parser.parse_args(argv)).synthetic_source == "model"
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--synthetic-source", "gan"])


def test_cross_folder_comparison_reproduces_the_designs_paired_differences() -> None:
    """On the recorded MONAI runs at 8 real cases: ``compare_arms`` of +4x against real-only is exactly the
    combined summary's difference, and an arm against itself differs by exactly 0."""
    runs = [r for r in load_runs([RESULTS / "monai-real8"]) if r["segnet"] == "monai"]
    plus4 = [r for r in runs if r["arm"] == "real+4x"]
    real = [r for r in runs if r["arm"] == "real"]
    assert len(plus4) == len(real) == 5
    summary = summarize_group(runs, 200, 0)
    mine = compare_arms(plus4, real, n_boot=200)
    for metric in ("dice", "sensitivity", "false_positives", "nodule_dice_solid"):
        expected = summary["differences"]["real+4x"][metric]
        assert mine[metric]["difference"] == expected
        assert mine[metric]["a"] == summary["arms"]["real+4x"][metric]
    same = compare_arms(real, real, n_boot=200)["dice"]["difference"]
    assert same["estimate"] == same["low"] == same["high"] == 0.0
    assert compare_arms(plus4[:2], real[1:], n_boot=50)["seeds"] == [1]
    with pytest.raises(InputError, match="no training seed"):
        compare_arms(plus4[:1], real[1:], n_boot=50)
    with pytest.raises(InputError, match="one segmenter"):
        compare_arms(plus4, [{**real[0], "n_real": 4}], n_boot=50)
    with pytest.raises(InputError, match="one arm"):  # seeds of two arms mixed on one side
        compare_arms(real[:2] + plus4[2:], real, n_boot=50)
