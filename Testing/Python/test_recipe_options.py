"""``--recipe``: the CLI and job field, what ``published`` sets for a Lung-DDPM file, and recognition by key layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDDPMLib import synthesis
from LungDDPMLib.cli import build_parser
from LungDDPMLib.commands.job_args import job_from_args
from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import InputError
from LungDDPMLib.job import Case, Job
from LungDDPMLib.recognition import describe_layout, recognise


def _case(tmp_path: Path) -> list:
    return [Case("a", "ct.nrrd", "lay.nrrd", str(tmp_path / "a"))]


def test_recipe_is_a_cli_option_and_a_strict_job_field(tmp_path: Path) -> None:
    out = str(tmp_path / "o.nrrd")
    args = build_parser().parse_args(
        ["synthesize", "--ct", "c.nrrd", "--layout", "l.nrrd", "--out", out, "--recipe", "published"]
    )
    assert job_from_args(args).recipe == "published"
    args = build_parser().parse_args(["worker", "--ct", "c.nrrd", "--layout", "l.nrrd", "--out", "o.nrrd"])
    assert job_from_args(args).recipe == "lungddpm"
    assert Job.from_dict({"cases": [dataclasses.asdict(_case(tmp_path)[0])], "recipe": "published"}).recipe
    with pytest.raises(InputError, match="'recipe' must be one of"):
        Job(cases=_case(tmp_path), recipe="theirs")
    for bad in ({"steps": 10}, {"sampler": "ddim"}, {"aas": False}, {"feather_voxels": 2}):
        with pytest.raises(InputError, match=f"drop {next(iter(bad))}"):
            Job(cases=_case(tmp_path), recipe="published", **bad)
    Job(cases=_case(tmp_path), recipe="published", blend_from=20)  # the published --blend_from itself


def test_default_recipe_keeps_earlier_completion_records(tmp_path: Path) -> None:
    job = Job(cases=_case(tmp_path))
    (tmp_path / "ct.nrrd").write_bytes(b"1")
    (tmp_path / "lay.nrrd").write_bytes(b"2")
    case = Case("a", str(tmp_path / "ct.nrrd"), str(tmp_path / "lay.nrrd"), str(tmp_path / "a"))
    assert "recipe" not in job.completion_key(case, "x")["settings"]
    published = dataclasses.replace(job, recipe="published")
    assert published.completion_key(case, "x")["settings"]["recipe"] == "published"


def test_published_recipe_for_lung_ddpm_is_its_sample_py_settings(monkeypatch) -> None:
    """Ancestral DDPM over all levels, the faithful AAS (with the user's --blend-from), resize-then-scale, fp32."""
    model = DiffusionModel(preset("lung-ddpm", unet=preset("tiny").unet, grid=(16, 16, 16))).eval()
    seen = {}

    def spy(model, layout, reference, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(synthesis, "sample", spy)
    real = synthesis.preprocess

    def keep_record(*args, **kwargs):
        items, record = real(*args, **kwargs)
        seen["record"] = record
        return items, record

    monkeypatch.setattr(synthesis, "preprocess", keep_record)
    ct = sitk.GetImageFromArray(np.full((20, 18, 22), -800, np.int16))
    lay = np.zeros((20, 18, 22), np.uint8)
    lay[3:15, 3:15, 3:18] = 1
    lay[6:9, 6:9, 6:9] = 2
    layout = sitk.GetImageFromArray(lay)
    from LungDDPMLib.sampling import AASConfig, RuntimeOptions, SamplerConfig

    with pytest.raises(RuntimeError, match="stop"):
        synthesis.synthesize_case(
            ct, layout, model, sampler=SamplerConfig("dpm++"), aas=AASConfig(blend_from=30),
            runtime=RuntimeOptions(precision="auto"), recipe="published",
        )  # fmt: skip
    assert seen["sampler"].name == "ddpm" and seen["sampler"].steps is None
    assert seen["aas"].faithful and seen["aas"].blend_from == 30 and seen["aas"].enabled
    assert seen["record"].compat_order == "resize-then-scale"
    assert seen["runtime"].precision == "fp32"
    seen.clear()
    with pytest.raises(RuntimeError, match="stop"):
        synthesis.synthesize_case(ct, layout, model, sampler=SamplerConfig("dpm++"), recipe="lungddpm")
    assert seen["sampler"].name == "dpm++" and not seen["aas"].faithful
    assert seen["record"].compat_order == "scale-then-resize"


def _meta_state(config) -> dict:
    with torch.device("meta"):
        return DiffusionModel(config).state_dict()


@pytest.mark.parametrize(
    "name,family,by_layout",
    [
        ("lung-ddpm", "lung-ddpm", True),
        ("lung-ddpm-plus", "lung-ddpm-plus", True),
        ("tiny", "lung-ddpm", False),  # 3 inputs but 3 levels: loading then names the shapes that differ
        ("roi-small", None, False),
    ],
)
def test_recognition_reads_the_key_layout(name: str, family, by_layout: bool) -> None:
    found, evidence = recognise(_meta_state(preset(name)))
    assert found == family, evidence
    assert evidence.startswith("architecture and key layout") == by_layout, evidence
    if family == "lung-ddpm-plus":
        layout = describe_layout(_meta_state(preset(name)))
        assert layout is not None and layout.widths == (64, 128, 192, 256) and layout.attention_levels == (2,)
        assert "2 input channels, 4 levels" in evidence


def test_a_narrow_network_in_the_plus_layout_is_still_recognised_as_plus() -> None:
    base = preset("lung-ddpm-plus")
    narrow = preset("lung-ddpm-plus", unet=dataclasses.replace(base.unet, model_channels=8))
    assert recognise(_meta_state(narrow))[0] == "lung-ddpm-plus"
    # Attention moved to another level: not the published layout.
    moved = preset("lung-ddpm-plus", unet=dataclasses.replace(base.unet, model_channels=8, attention_levels=(1,)))
    found, evidence = recognise(_meta_state(moved))
    assert found == "lung-ddpm-plus" and evidence.startswith("input channels only")


@pytest.mark.slow
def test_info_says_a_renamed_plus_file_is_lung_ddpm_plus_by_its_architecture(tmp_path: Path, capsys) -> None:
    from LungDDPMLib.cli import main

    torch.manual_seed(0)
    state = DiffusionModel(preset("lung-ddpm-plus")).state_dict()
    path = tmp_path / "weights-from-a-colleague.pt"
    torch.save({"step": 5, "model": state, "ema": state}, path)
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"]["family"] == "lung-ddpm-plus"
    assert info["architecture"]["by"].startswith("architecture and key layout")
    assert info["recognised_as"]["key"] == "lung-ddpm-plus" and info["recognised_as"]["by"] == "architecture"
    renamed = tmp_path / "best_model.pt"
    path.rename(renamed)
    assert main(["info", str(renamed)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["recognised_as"]["by"] == "name, confirmed by the architecture"
