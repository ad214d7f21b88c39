"""A quality gate on the ROI model that ships: it loads safely, it is what the registry says, the bundled models fit
the size budget, and on a held-out phantom each drawn nodule is ordered by its stated class (ground glass darkest,
solid brightest), lies within 200 HU of the phantom's own nodule of that class, and the solid and part-solid ones
fall in their class's HU range. Ground glass must stay ground-glass dark (below -450 HU); the model draws it up to
about 140 HU too faint (its card's table), so its lower class bound is not part of the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LungDDPMLib.checkpoint import file_sha256, load_checkpoint
from LungDDPMLib.cli import main
from LungDDPMLib.evaluation.nodule_classes import CLASS_RANGES, nodule_fidelity
from LungDDPMLib.phantom import NoduleSpec, make_phantom, save_phantom
from LungDDPMLib.registry import DEMO_FILE, ROI_FAST_FILE, ROI_FILE, bundled_model, identify


def test_bundled_models_fit_the_budget_and_are_recognised() -> None:
    sizes = {p.name: p.stat().st_size for p in ROI_FILE.parent.glob("*.pt")}
    assert set(sizes) == {DEMO_FILE.name, ROI_FILE.name, ROI_FAST_FILE.name}, sizes
    assert sum(sizes.values()) <= 20 * 10**6, sizes  # everything bundled: at most 20 MB
    entries = {}
    for path, key in ((ROI_FILE, "lungddpm-roi"), (ROI_FAST_FILE, "lungddpm-roi-fast"), (DEMO_FILE, "lungddpm-demo")):
        known, how = identify(str(path))
        assert known is not None and known.key == key and how == "sha256", path
        entries[key] = known
    teacher, student = load_checkpoint(ROI_FILE), load_checkpoint(ROI_FAST_FILE)  # weights_only, strict architecture
    cfg = teacher.config
    assert cfg.spatial_mode == "roi" and cfg.nodule_types == ("solid", "part-solid", "ground-glass")
    assert "nodule_type" in cfg.unet.layout_channels and tuple(cfg.grid) == tuple(entries["lungddpm-roi"].grid)
    # the default ROI model is the 8-step student of exactly this teacher, stored at half size, run by default at the
    # 4 levels chosen for it on validation phantoms (docs/benchmarks.md, "A tuned 4-step schedule")
    assert bundled_model("roi") == ROI_FAST_FILE and student.config == teacher.config
    record = student.distillation
    assert record is not None and (record.sampler, record.steps, record.levels) == ("ddim", 8, (249, 218, 174, 100))
    assert record.teacher_sha256 == file_sha256(ROI_FILE) and teacher.distillation is None
    assert (
        student.provenance["stored_as"] == "float16" and load_checkpoint(DEMO_FILE).provenance["stored_as"] == "float16"
    )


@pytest.mark.parametrize(
    "how",
    [
        pytest.param([], id="default-student"),
        pytest.param(["--checkpoint", "lungddpm-roi", "--steps", "20"], id="teacher-one-option-away"),
    ],
)
def test_bundled_roi_model_draws_each_class_through_the_cli(tmp_path: Path, capsys, how: list) -> None:
    """Held-out phantom (seed 5; training used 1000-1047) with one nodule of each class; ``--mode roi`` without a
    checkpoint picks the bundled student at its 4 tuned levels, ``--checkpoint lungddpm-roi`` the teacher; the mean
    HU inside each nodule is checked against its class (module doc)."""
    specs = [
        NoduleSpec(12.0, "solid", "round", side="right"),
        NoduleSpec(14.0, "part-solid", "round", side="left"),
        NoduleSpec(14.0, "ground-glass", "lobulated", side="left"),
    ]
    ph = make_phantom((256, 256, 160), (0.8, 0.8, 1.5), seed=5, nodules=specs)
    paths = save_phantom(tmp_path / "in", ph, name="case", seg_nrrd=False)
    out = tmp_path / "out" / "case.nrrd"
    args = ["synthesize", "--ct", str(paths["ct"]), "--layout", str(paths["layout"]), "--out", str(out)]
    assert main([*args, "--mode", "roi", *how, "--device", "cpu", "--seed", "0"]) == 0
    capsys.readouterr()
    provenance = json.loads(Path(str(out.with_suffix("")) + ".lungddpm.json").read_text())
    expected = (ROI_FILE, "dpm++", 20, None) if how else (ROI_FAST_FILE, "ddim", 4, [249, 218, 174, 100])
    ran = (Path(provenance["model"]["path"]), provenance["sampler"], provenance["steps"], provenance["levels"])
    assert ran == expected
    assert provenance["nodule_types"]["used"] is True
    assert provenance["regenerated"] == "nodules + 3 mm"
    real, lay = sitk.GetArrayFromImage(ph.ct), sitk.GetArrayFromImage(ph.layout)
    synth = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert np.array_equal(synth[lay == 0], real[lay == 0])  # outside the layout: the input, bit for bit
    rows = {r["class"]: r for r in nodule_fidelity(real, synth, lay, (1.5, 0.8, 0.8))}
    hu = {k: rows[k]["synthetic_mean_hu"] for k in rows}
    truth = {k: rows[k]["real_mean_hu"] for k in rows}  # the phantom's own nodules, measured the same way
    assert hu["ground-glass"] < hu["part-solid"] < hu["solid"] - 100, hu  # ordered by density
    assert all(abs(hu[k] - truth[k]) < 200 for k in hu), (hu, truth)
    for k in ("solid", "part-solid"):
        assert CLASS_RANGES[k][0] <= hu[k] <= CLASS_RANGES[k][1], (k, hu[k])
    assert hu["ground-glass"] < CLASS_RANGES["ground-glass"][1], hu  # not drawn as a dense blob
    changed = synth != real
    assert changed.any() and not (changed & (lay == 0)).any()
