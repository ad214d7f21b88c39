"""Feature extractors: the radiomic set on a phantom with known edits, and the Med3D ResNet-50 loader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDDPMLib.errors import CheckpointError, InputError, UnsafeCheckpointError
from LungDDPMLib.evaluation import Med3DExtractor, Med3DResNet50, RadiomicExtractor, extract_features, make_extractor
from LungDDPMLib.phantom import make_phantom

SPACING_ZYX = (4.0, 3.0, 3.0)
SMALL_INPUT = (16, 32, 32)
# Real keys and shapes of MedicalNet's resnet_50.pth (after stripping "module."), from its resnet.py.
MEDICALNET_KEYS = {
    "conv1.weight": (64, 1, 7, 7, 7),
    "bn1.running_mean": (64,),
    "layer1.0.conv1.weight": (64, 64, 1, 1, 1),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1, 1),
    "layer1.0.downsample.1.running_var": (256,),
    "layer2.0.conv2.weight": (128, 128, 3, 3, 3),
    "layer3.5.conv2.weight": (256, 256, 3, 3, 3),
    "layer4.0.downsample.0.weight": (2048, 1024, 1, 1, 1),
    "layer4.2.bn3.bias": (2048,),
}
# Sum over the stem and the [3, 4, 6, 3] Bottlenecks (3x3x3 convs, BN weight + bias, B shortcuts); an audit of
# the released resnet_50.pth reports the same (318 entries, 46,155,072 parameters).
MEDICALNET_RESNET50_PARAMETERS = 46_155_072


@pytest.fixture(scope="module")
def phantom():
    ph = make_phantom((64, 64, 48), (3.0, 3.0, 4.0), seed=3)
    return sitk.GetArrayFromImage(ph.ct).astype(np.float64), sitk.GetArrayFromImage(ph.layout)


def test_radiomic_features_are_deterministic_and_named(phantom) -> None:
    ct, layout = phantom
    ex = RadiomicExtractor()
    a = ex(ct, SPACING_ZYX, layout > 0)
    assert a.dtype == np.float64 and a.shape == (ex.dim,) == (len(ex.feature_names),)
    assert np.array_equal(a, ex(ct.copy(), SPACING_ZYX, (layout > 0).copy()))  # bit-identical
    assert np.isfinite(a).all() and len(set(ex.feature_names)) == ex.dim
    assert ex.name == "radiomic-v1" and ex.comparable_with_paper is False
    whole = ex(ct, SPACING_ZYX)
    assert not np.array_equal(a, whole)
    assert np.array_equal(extract_features([(ct, SPACING_ZYX, layout > 0), (ct, SPACING_ZYX, None)], ex), [a, whole])


def test_radiomic_features_respond_to_known_edits(phantom) -> None:
    ct, layout = phantom
    ex, mask = RadiomicExtractor(), layout > 0
    idx = {n: i for i, n in enumerate(ex.feature_names)}
    base = ex(ct, SPACING_ZYX, mask)
    brighter = ct.copy()
    brighter[mask] += 100.0
    up = ex(brighter, SPACING_ZYX, mask)
    assert up[idx["mean_hu"]] - base[idx["mean_hu"]] == pytest.approx(100.0, abs=1e-9)
    assert up[idx["p50_hu"]] - base[idx["p50_hu"]] == pytest.approx(100.0, abs=1e-9)
    for name in ("sd_hu", "skewness", "kurtosis"):
        assert up[idx[name]] == pytest.approx(base[idx[name]], rel=1e-9)
    noisy = ct + np.random.default_rng(0).normal(0, 40, ct.shape)
    more = ex(noisy, SPACING_ZYX, mask)
    for name in ("sd_hu", "local_sd_mean_hu", "grad_mean_hu_per_mm", "glcm_contrast", "log1mm_sd"):
        assert more[idx[name]] > base[idx[name]], name


def test_mask_restricts_the_statistics(phantom) -> None:
    ct, layout = phantom
    ex, mask = RadiomicExtractor(), layout > 0
    outside = ct.copy()
    outside[~mask] = np.random.default_rng(1).normal(500, 300, (~mask).sum())
    a, b = ex(ct, SPACING_ZYX, mask), ex(outside, SPACING_ZYX, mask)
    intensity = ex.feature_names.index("hist_entropy_bits") + 1  # the first features use mask voxels only
    assert np.array_equal(a[:intensity], b[:intensity])
    assert not np.array_equal(a, b)  # filters see the real neighbours at the region's border
    with pytest.raises(InputError, match="mask is empty"):
        ex(ct, SPACING_ZYX, np.zeros(ct.shape, dtype=bool))
    with pytest.raises(InputError, match="spacing"):
        ex(ct, (1.0, 0.0, 1.0))


def test_make_extractor_names_the_choices() -> None:
    assert make_extractor("radiomic").name == "radiomic-v1"
    with pytest.raises(InputError, match="radiomic, med3d"):
        make_extractor("nope")
    with pytest.raises(InputError, match="weights"):
        make_extractor("med3d")


@pytest.fixture(scope="module")
def med3d(tmp_path_factory):
    """A randomly initialised backbone saved the way MedicalNet saves it (DataParallel prefix, seg head)."""
    model = Med3DResNet50().eval()
    path = tmp_path_factory.mktemp("med3d") / "resnet_50.pth"
    state = {"module." + k: v for k, v in model.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(2048, 32, 2, 2, 2)
    torch.save({"state_dict": state}, path)
    return model, path


def test_med3d_layout_matches_medicalnet(med3d) -> None:
    model, _ = med3d
    sd = model.state_dict()
    for key, shape in MEDICALNET_KEYS.items():
        assert tuple(sd[key].shape) == shape, key
    assert len(sd) == 318
    assert sum(p.numel() for p in model.parameters()) == MEDICALNET_RESNET50_PARAMETERS


def test_med3d_from_file_gives_the_in_memory_features(med3d, phantom) -> None:
    model, path = med3d
    ct, layout = phantom
    ex = Med3DExtractor.from_file(path, input_size=SMALL_INPUT)
    assert (ex.name, ex.dim, ex.comparable_with_paper) == ("med3d-resnet50", 2048, True)
    f = ex(ct, SPACING_ZYX, layout > 0)
    assert f.shape == (2048,) and f.dtype == np.float64 and np.isfinite(f).all()
    assert np.array_equal(f, ex(ct, SPACING_ZYX, layout > 0))
    with torch.inference_mode():
        direct = model(ex.preprocess(ct, SPACING_ZYX, layout > 0))[0].double().numpy()
    np.testing.assert_allclose(f, direct, rtol=1e-6, atol=1e-7)
    loaded = ex.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    x, whole = ex.preprocess(ct, SPACING_ZYX, layout > 0), ex.preprocess(ct, SPACING_ZYX)
    assert tuple(x.shape) == (1, 1, *SMALL_INPUT) and not torch.equal(x, whole)  # the mask matters
    assert float(whole.mean()) == pytest.approx(0.0, abs=0.05)  # z-scored (up to the resize)


def test_med3d_file_errors(med3d, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = med3d
    shapes = {k: torch.zeros(()).expand(v.shape) for k, v in model.state_dict().items()}  # tiny on disk
    del shapes["layer2.1.bn2.weight"]
    missing = tmp_path / "missing.pth"
    torch.save(shapes, missing)
    with pytest.raises(CheckpointError, match=r"missing: layer2\.1\.bn2\.weight"):
        Med3DExtractor.from_file(missing)

    class RunsCode:
        def __reduce__(self):  # the attack a malicious file would carry
            return (os.system, ("touch PWNED",))

    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": RunsCode()}}, evil)
    with pytest.raises(UnsafeCheckpointError):
        Med3DExtractor.from_file(evil)
    assert not (tmp_path / "PWNED").exists()
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        make_extractor("med3d", weights=str(text))
