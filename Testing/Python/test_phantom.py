"""Phantom: realistic HU per structure, nodule placement, determinism, files, speed, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from LungDDPMLib.config import LABEL_LUNG, LABEL_OF_TYPE, is_nodule
from LungDDPMLib.data.preview import montage
from LungDDPMLib.data.segmentation import read_segmentation
from LungDDPMLib.errors import InputError
from LungDDPMLib.phantom import NoduleSpec, make_phantom, save_phantom
from LungDDPMLib.phantom import tissues as T


@pytest.fixture(scope="module")
def default_phantom():
    return make_phantom(seed=0)


def _arrays(ph):
    return (
        sitk.GetArrayFromImage(ph.ct).astype(np.float64),
        sitk.GetArrayFromImage(ph.layout),
        sitk.GetArrayFromImage(ph.tissue),
    )


def test_default_phantom_geometry(default_phantom):
    """(Its generation time is a benchmark, docs/benchmarks.md, not a test: a wall-clock bound fails on a busy CPU.)"""
    ph = default_phantom
    assert ph.ct.GetSize() == (256, 256, 160)
    assert ph.ct.GetSpacing() == pytest.approx((0.8, 0.8, 1.5))
    assert ph.ct.GetPixelID() == sitk.sitkInt16
    for img in (ph.layout, ph.tissue):
        assert img.GetSize() == ph.ct.GetSize() and img.GetOrigin() == ph.ct.GetOrigin()
        assert img.GetDirection() == ph.ct.GetDirection()
    # Centred on the origin: the middle voxel is at (about) 0 mm.
    centre = ph.ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ph.ct.GetSize()])
    assert np.allclose(centre, 0, atol=1e-6)


# (tissue, low, high) for the mean HU inside the structure, away from its edges.
HU_RANGES = [
    (T.AIR, -1010, -985),
    (T.FAT, -130, -70),
    (T.MUSCLE, 20, 70),
    (T.MEDIASTINAL_FAT, -130, -60),
    (T.LUNG, -900, -800),
    (T.HEART, 20, 60),
    (T.BLOOD, 20, 60),
    (T.AIRWAY_LUMEN, -1024, -950),
    (T.TRABECULAR, 150, 400),
    (T.CORTICAL, 700, 1500),
    (T.LIVER, 40, 80),
]


def test_hu_statistics_per_structure(default_phantom):
    ct, layout, tissue = _arrays(default_phantom)
    for code, lo, hi in HU_RANGES:
        mask = ndi.binary_erosion(tissue == code)
        assert mask.sum() > 200, f"tissue {code} (nearly) missing"
        mean = ct[mask].mean()
        assert lo <= mean <= hi, f"tissue {code}: mean {mean:.0f} HU outside {lo}..{hi}"
    # CT-like noise: a few tens of HU in homogeneous tissue, spatially correlated.
    liver = ndi.binary_erosion(tissue == T.LIVER, iterations=3)
    assert 10 < ct[liver].std() < 35
    # Vessels make the lung heterogeneous: a clear bright tail.
    lung_all = ct[layout == LABEL_LUNG]
    assert np.percentile(lung_all, 99) > -500


def test_anatomy_is_where_it_belongs(default_phantom):
    _, layout, tissue = _arrays(default_phantom)
    nz, ny, nx = tissue.shape
    # Spine posterior (large y) and midline; heart anterior-left of the spine.
    cz, cy, cx = np.nonzero(tissue == T.CORD)
    assert cy.mean() > ny * 0.6 and abs(cx.mean() - nx / 2) < 3
    assert cz.max() - cz.min() > 0.9 * nz  # the canal runs through the whole volume
    _, hy, hx = np.nonzero(tissue == T.HEART)
    assert hy.mean() < ny / 2 and hx.mean() > nx / 2  # anterior, patient's left
    # Two lungs, left and right of the midline, each a large volume.
    lx = np.nonzero(layout == LABEL_LUNG)[2]
    assert (lx < nx / 2).sum() > 1e5 and (lx > nx / 2).sum() > 1e5
    # Trachea: air in the upper midline.
    top = tissue[int(nz * 0.85)]
    assert (top[:, nx // 2 - 8 : nx // 2 + 8] == T.AIRWAY_LUMEN).any()
    # Ribs surround the lungs: bone lateral to the lungs in a mid-chest slice.
    k = int(nz * 0.55)
    bone_x = np.nonzero(np.isin(tissue[k], (T.CORTICAL, T.TRABECULAR)))[1]
    lung_x = np.nonzero(layout[k] == LABEL_LUNG)[1]
    assert bone_x.min() < lung_x.min() and bone_x.max() > lung_x.max()


def test_nodules_inside_lungs_as_asked(small_phantom):
    ph = small_phantom
    _, layout, tissue = _arrays(ph)
    labels, n = ndi.label(is_nodule(layout))
    assert n == 3
    lung = ndi.binary_dilation(layout == LABEL_LUNG, iterations=2)
    for info in ph.info["nodules"]:
        i, j, k = info["center_index"]
        assert layout[k, j, i] == LABEL_OF_TYPE[info["kind"]], info  # each nodule labelled with its class
        assert info["side"] == ("left" if info["center_mm"][0] > 0 else "right")
        comp = labels == labels[k, j, i]
        inside = (comp & lung).sum() / comp.sum()
        assert inside > 0.95, f"nodule {info} only {inside:.0%} in the lung"
        d = info["diameter_mm"]
        expected = np.pi / 6 * d**3
        assert 0.3 * expected < info["volume_mm3"] < 2.5 * expected
    juxta = next(n for n in ph.info["nodules"] if n["juxta_pleural"])
    i, j, k = juxta["center_index"]
    comp = labels == labels[k, j, i]
    near_wall = ndi.binary_dilation(comp, iterations=2) & np.isin(
        tissue, (T.MUSCLE, T.CORTICAL, T.TRABECULAR, T.CARTILAGE)
    )
    assert near_wall.any(), "juxta-pleural nodule does not touch the chest wall"


def test_nodule_kinds_have_their_density():
    specs = [NoduleSpec(20, "solid", "round", side="right"), NoduleSpec(20, "ground-glass", "round", side="left")]
    ph = make_phantom((96, 96, 64), (2.0, 2.0, 3.0), seed=11, nodules=specs)
    ct, _, _ = _arrays(ph)
    for info, lo, hi in zip(ph.info["nodules"], (-150, -800), (80, -350)):
        i, j, k = info["center_index"]
        core = ct[k - 1 : k + 2, j - 2 : j + 3, i - 2 : i + 3]
        assert lo < np.median(core) < hi, (info["kind"], np.median(core))


def test_determinism_by_seed(small_phantom):
    from conftest import SMALL_NODULES, SMALL_SIZE, SMALL_SPACING

    again = make_phantom(SMALL_SIZE, SMALL_SPACING, seed=7, nodules=list(SMALL_NODULES))
    a = sitk.GetArrayViewFromImage(small_phantom.ct)
    assert np.array_equal(a, sitk.GetArrayViewFromImage(again.ct))
    assert np.array_equal(sitk.GetArrayViewFromImage(small_phantom.layout), sitk.GetArrayViewFromImage(again.layout))
    other = make_phantom(SMALL_SIZE, SMALL_SPACING, seed=8, nodules=list(SMALL_NODULES))
    assert not np.array_equal(a, sitk.GetArrayViewFromImage(other.ct))


def test_healthy_and_random_nodule_counts():
    healthy = make_phantom((64, 64, 48), (3.0, 3.0, 4.0), seed=1, nodules=0)
    assert not is_nodule(sitk.GetArrayViewFromImage(healthy.layout)).any()
    assert healthy.info["nodules"] == []
    three = make_phantom((64, 64, 48), (3.0, 3.0, 4.0), seed=1, nodules=3)
    assert len(three.info["nodules"]) == 3


def test_save_phantom_writes_loadable_files(tmp_path, small_phantom):
    paths = save_phantom(tmp_path / "out", small_phantom, name="case1")
    assert {p.name for p in paths.values()} == {
        "case1_ct.nrrd",
        "case1_layout.nrrd",
        "case1_layout.seg.nrrd",
        "case1_info.json",
    }
    ct = sitk.ReadImage(str(paths["ct"]))
    assert np.array_equal(sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(small_phantom.ct))
    assert ct.GetSpacing() == small_phantom.ct.GetSpacing() and ct.GetOrigin() == small_phantom.ct.GetOrigin()
    seg = read_segmentation(paths["seg"])
    kinds = sorted({n["kind"] for n in small_phantom.info["nodules"]})
    assert seg.names == [
        "lung",
        "nodule",
        *[f"nodule {k}" for k in ("solid", "part-solid", "ground-glass") if k in kinds],
    ]
    raw = sitk.ReadImage(str(paths["seg"]))
    for key in ("Segment0_Name", "Segment0_LabelValue", "Segment0_Layer", "Segment0_ID", "Segment1_Extent"):
        assert key in raw.GetMetaDataKeys()
    layout = sitk.GetArrayViewFromImage(small_phantom.layout)
    for kind in kinds:  # the typed segments read back as the same classes
        assert np.array_equal(seg.mask(seg.find(f"nodule {kind}")), layout == LABEL_OF_TYPE[kind])
    info = json.loads(paths["info"].read_text())
    assert info["seed"] == 7 and len(info["nodules"]) == 3
    nii = save_phantom(tmp_path / "nii", small_phantom, fmt="nii.gz", seg_nrrd=False)
    assert nii["ct"].name.endswith(".nii.gz") and "seg" not in nii


def test_montage_png(tmp_path, small_phantom):
    path = montage(small_phantom.ct, tmp_path / "m.png", "lung", layout=small_phantom.layout)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 6 * 96 and height > 96


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": (10, 96, 64)}, "size"),
        ({"size": (96, 96)}, "three values"),
        ({"spacing": (0.0, 1.0, 1.0)}, "spacing"),
        ({"nodules": -1}, "nodules"),
        ({"noise_hu": -5}, "noise"),
        ({"nodules": ["big"]}, "NoduleSpec"),
    ],
)
def test_bad_phantom_options(kwargs, match):
    options = {"size": (64, 64, 48), "spacing": (3.0, 3.0, 4.0), **kwargs}
    with pytest.raises(InputError, match=match):
        make_phantom(**options)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"diameter_mm": 2.0}, "diameter"),
        ({"diameter_mm": 31.0}, "diameter"),
        ({"kind": "calcified"}, "kind"),
        ({"shape": "square"}, "shape"),
        ({"side": "middle"}, "side"),
        ({"center_mm": (1, 2)}, "center_mm"),
    ],
)
def test_bad_nodule_specs(kwargs, match):
    with pytest.raises(InputError, match=match):
        NoduleSpec(**kwargs)


def test_nodule_that_cannot_fit_is_refused():
    with pytest.raises(InputError, match="does not fit"):
        make_phantom((48, 48, 40), (2.0, 2.0, 3.0), seed=0, nodules=[NoduleSpec(30, juxta_pleural=False)] * 4)


def test_memory_is_checked_before_allocating(monkeypatch):
    import LungDDPMLib.data.validation as V

    monkeypatch.setattr(V, "available_memory_bytes", lambda: 100 * 2**20)
    with pytest.raises(InputError, match="GiB"):
        make_phantom((512, 512, 400), (0.7, 0.7, 1.0))
