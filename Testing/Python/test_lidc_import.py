"""``lungddpm import-lidc`` on LIDC-style fixtures made here (a pydicom CT series, a reader XML in LIDC's schema).

The truth is computed in this file from the readers' spheres (numpy distances), never from the importer: each
reader's mask is the union of its digital discs (LIDC's rule: the outline pixels and what they enclose), less the
inside of a hole contour; the consensus is the voxels that at least the given share of the nodule's readers
include; the diameter is a brute-force largest in-slice distance between voxel centres.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("pydicom")

import lidc_fixtures as F

from LungDDPMLib.cli import main
from LungDDPMLib.data.auto_lung import auto_lung_mask
from LungDDPMLib.data.segmentation import read_segmentation
from LungDDPMLib.dicom.lidc_consensus import ConsensusRules
from LungDDPMLib.dicom.lidc_import import import_lidc
from LungDDPMLib.dicom.lidc_marks import outline_and_fill, reader_marks
from LungDDPMLib.dicom.lidc_xml import read_lidc_xml
from LungDDPMLib.dicom.series import read_ct_series
from LungDDPMLib.errors import InputError

SX, SY, SZ = F.SPACING


def reader_mask(s: F.ReaderSphere, holes) -> np.ndarray:
    mask = F.sphere(s.centre, s.radius_mm)
    for k, outline in holes.get((s.reader, s.nodule_id), {}).items():
        inside = F.disc(k, s.centre, s.hole_mm)
        for x, y in outline:
            inside[y, x] = False  # the hole's outline stays nodule
        mask[k] &= ~inside
    return mask


def truth_consensus(spheres: List[F.ReaderSphere], holes, level: float) -> np.ndarray:
    count = sum(reader_mask(s, holes).astype(int) for s in spheres)
    return count >= level * len(spheres)


def brute_diameter(mask: np.ndarray) -> float:
    best = 0.0
    for k in range(mask.shape[0]):
        y, x = np.nonzero(mask[k])
        pts = np.stack([x * SX, y * SY], axis=1)
        if len(pts) > 1:
            best = max(best, float(np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()))
    return best


def world(zyx_mean: np.ndarray) -> np.ndarray:
    z, y, x = zyx_mean
    return np.asarray(F.ORIGIN) + np.asarray([x * SX, y * SY, z * SZ])


def rows_of(path: Path) -> Dict[str, dict]:
    with open(path, newline="") as fh:
        return {r["marks"].split(";")[0].split(":")[1]: r for r in csv.DictReader(fh)}


# --- the series reader ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slope,dtype", [(1.0, np.int16), (0.5, np.float32)])
def test_hu_is_stored_times_slope_plus_intercept_and_slices_follow_positions(tmp_path, slope, dtype) -> None:
    stored = np.random.default_rng(0).integers(0, 4000, size=(7, 12, 10)).astype(np.uint16)
    written = F.write_series(tmp_path / "s", stored, slope=slope, intercept=-1024)
    names_in_position_order = [p.name for p in written.files]
    assert names_in_position_order != sorted(names_in_position_order)  # the file names would give the wrong order
    series = read_ct_series(tmp_path / "s")
    hu = sitk.GetArrayFromImage(series.image)
    assert hu.dtype == dtype
    assert np.array_equal(hu, stored.astype(np.float64) * slope - 1024)
    assert series.files == written.files and series.sop_uids == written.sop_uids
    assert series.z_positions == pytest.approx(written.z) and series.z_positions == sorted(series.z_positions)
    assert series.image.GetOrigin() == pytest.approx(F.ORIGIN)
    assert series.image.GetSpacing() == pytest.approx(F.SPACING)  # x between columns, y between rows
    assert series.image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert series.series_uid == written.series_uid and series.patient_id == "LIDC-TEST-0001"
    assert all("PixelData" not in ds for ds in series.datasets)


def test_slices_listed_from_head_to_feet_are_ordered_by_position_too(tmp_path) -> None:
    stored = np.arange(5, dtype=np.uint16)[:, None, None] * np.ones((5, 4, 6), dtype=np.uint16)
    top_first = [(0.0, 0.0, 10.0 - 2.5 * k) for k in range(5)]
    F.write_series(tmp_path / "s", stored, positions=top_first)
    series = read_ct_series(tmp_path / "s")
    assert sitk.GetArrayFromImage(series.image)[:, 0, 0].tolist() == [v - 1024 for v in (4, 3, 2, 1, 0)]
    assert series.z_positions == [0.0, 2.5, 5.0, 7.5, 10.0]


# --- contours --------------------------------------------------------------------------------------------------------


def test_an_outline_includes_its_own_pixels_and_what_it_encloses() -> None:
    (y0, x0), outline, fill = outline_and_fill([(2, 2), (4, 2), (4, 4), (2, 4)])  # corners only
    assert (y0, x0) == (2, 2) and (outline | fill).all() and (outline | fill).shape == (3, 3)
    _, outline, fill = outline_and_fill([(5, 1), (8, 1)])  # a two-point outline is the line between them
    assert (outline | fill).tolist() == [[True] * 4]
    for r in (1.0, 2.3, 4.0, 6.5):
        d = F.disc(10, (30, 35, 10), r)
        (y0, x0), outline, fill = outline_and_fill(F.trace_outline(d))
        got = np.zeros_like(d)
        got[y0 : y0 + outline.shape[0], x0 : x0 + outline.shape[1]] = outline | fill
        assert np.array_equal(got, d), r


def test_a_contour_too_thin_to_enclose_anything_still_marks_its_outline() -> None:
    from LungDDPMLib.dicom.lidc_marks import SliceFinder, nodule_mark
    from LungDDPMLib.dicom.lidc_xml import ReaderNodule, Roi
    from LungDDPMLib.dicom.series import DicomSeries

    image = sitk.Image(12, 10, 3, sitk.sitkInt16)
    series = DicomSeries(image, [], "1.2", "1.3", "p", ["a", "b", "c"], [0.0, 1.0, 2.0])
    rois = (Roi(1.0, "b", True, ((2, 2), (5, 5))), Roi(None, "c", True, ((7, 1), (7, 3), (7, 6))))
    mark = nodule_mark(ReaderNodule("r", "n", {}, rois), SliceFinder(series, "x.xml"))
    got = {tuple(v) for v in mark.voxels().tolist()}
    assert got == {(1, k, k) for k in range(2, 6)} | {(2, y, 7) for y in range(1, 7)}


def test_each_reader_mark_is_its_discs_less_the_inside_of_its_hole(tmp_path) -> None:
    series_f, xml, spheres, _, holes = F.make_case(tmp_path)
    series = read_ct_series(series_f.folder)
    marks = {m.nodule_id: m for m in reader_marks(read_lidc_xml(xml).sessions, series, str(xml))}
    for s in spheres:
        full = np.zeros(F.SHAPE, dtype=bool)
        v = marks[s.nodule_id].voxels()
        full[v[:, 0], v[:, 1], v[:, 2]] = True
        assert np.array_equal(full, reader_mask(s, holes)), s.nodule_id  # N-A2 slice 9: found by z, SOP unknown
    hole = holes[("111", "N-A1")][10]
    assert len(hole) > 4 and not np.array_equal(reader_mask(spheres[0], holes), F.sphere(spheres[0].centre, 4.0))
    assert marks["S-1"].kind == "small-nodule" and marks["NN-2"].kind == "non-nodule"


# --- the import ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", [F.NIH, None], ids=["nih-namespace", "no-namespace"])
def test_import_writes_the_consensus_layout_and_the_nodule_table(tmp_path, capsys, namespace) -> None:
    series, xml, spheres, _, holes = F.make_case(tmp_path, namespace=namespace)
    out = tmp_path / "out"
    assert main(["import-lidc", "--dicom", str(series.folder), "--xml", str(xml), "--out", str(out)]) == 0
    paths = {k: Path(v) for k, v in json.loads(capsys.readouterr().out).items()}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"LIDC-TEST-0001_{s}" for s in ("ct.nii.gz", "layout.nii.gz", "layout.seg.nrrd", "nodules.csv")
    )
    ct = sitk.ReadImage(str(paths["ct"]))
    assert np.array_equal(sitk.GetArrayFromImage(ct), F.chest_hu())
    # Truth: the lung from the library's automatic mask of the fixture CT, the nodules from the readers' spheres.
    ref = sitk.GetImageFromArray(F.chest_hu().astype(np.int16))
    ref.SetSpacing(F.SPACING)
    ref.SetOrigin(F.ORIGIN)
    expected = sitk.GetArrayFromImage(auto_lung_mask(ref)).astype(np.uint8)
    by = {k: [s for s in spheres if s.nodule_id[2] == k] for k in "ABCD"}
    cons = {k: truth_consensus(v, holes, 0.5) for k, v in by.items()}
    for k, label in (("B", 5), ("C", 4), ("A", 3)):  # D is under 3 mm
        expected[cons[k]] = label
    layout = sitk.ReadImage(str(paths["layout"]))
    assert np.array_equal(sitk.GetArrayFromImage(layout), expected)
    assert layout.GetOrigin() == pytest.approx(F.ORIGIN, abs=1e-4)
    lung_share = (expected == 1).sum() / (F.chest_hu() == -850).sum()
    assert 0.95 < lung_share < 1.05
    seg = read_segmentation(paths["seg"])
    assert {"lung", "nodule solid", "nodule part-solid", "nodule ground-glass"} <= set(seg.names)
    assert np.array_equal(seg.mask(seg.find("nodule ground-glass")), cons["B"])

    rows = rows_of(paths["nodules"])
    want = {
        "N-A1": ("solid", "3", 4, "4.5", "4", "5"),
        "N-B1": ("ground-glass", "5", 3, "2", "2", "3"),
        "N-C2": ("part-solid", "4", 2, "3", "2.5", "4"),  # reader 444 left C's texture empty
        "N-D1": ("solid", "", 2, "5", "1", "2.5"),
    }
    for nid, (cls, label, n, tex, mal, sub) in want.items():
        r = rows[nid]
        mask = cons[nid[2]]
        assert (r["class"], r["label"], int(r["n_readers"])) == (cls, label, n)
        assert (r["texture_median"], r["malignancy_median"], r["subtlety_median"]) == (tex, mal, sub)
        assert r["seriesuid"] == series.series_uid and r["kind"] == "nodule"
        centre = world(np.argwhere(mask).mean(axis=0))
        assert [float(r[c]) for c in ("coordX", "coordY", "coordZ")] == pytest.approx(centre, abs=1e-3)
        assert float(r["diameter_mm"]) == pytest.approx(brute_diameter(mask), abs=1e-3)
        assert r["drawn"] == ("yes" if label else "no")
    assert float(rows["N-A1"]["diameter_mm"]) > 7 and "under --min-diameter-mm 3" in rows["N-D1"]["note"]
    small, non = rows["S-1"], rows["NN-2"]
    assert (small["kind"], small["drawn"], small["n_readers"]) == ("small-nodule", "no", "2")
    assert [float(small[c]) for c in ("coordX", "coordY", "coordZ")] == pytest.approx(world(np.array([14, 50, 40.5])))
    assert (non["kind"], non["drawn"], non["n_readers"]) == ("non-nodule", "no", "1")
    assert [float(non[c]) for c in ("coordX", "coordY", "coordZ")] == pytest.approx(world(np.array([4, 44, 60])))
    assert len(rows) == 6


def _layout(paths) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(paths["layout"])))


def test_the_rules_are_options(tmp_path) -> None:
    series, xml, spheres, _, holes = F.make_case(tmp_path)
    by = {k: [s for s in spheres if s.nodule_id[2] == k] for k in "ABCD"}
    # Consensus 1.0: only what every reader includes; reader 111's hole is cut out of nodule A.
    paths = import_lidc(series.folder, xml, tmp_path / "all", ConsensusRules(consensus=1.0))
    every = truth_consensus(by["A"], holes, 1.0)
    assert np.array_equal(_layout(paths) == 3, every) and not every[10, 35, 30]
    # At least 3 readers: C (2 readers) is listed but not drawn.
    paths = import_lidc(series.folder, xml, tmp_path / "three", ConsensusRules(min_readers=3))
    assert not (_layout(paths) == 4).any() and (_layout(paths) == 5).any()
    assert "fewer than --min-readers 3" in rows_of(paths["nodules"])["N-C2"]["note"]
    # Texture thresholds: with solid from 5, A's median 4.5 makes it part-solid.
    paths = import_lidc(series.folder, xml, tmp_path / "tex", ConsensusRules(solid_texture_min=5))
    assert rows_of(paths["nodules"])["N-A1"]["class"] == "part-solid"
    # Equivalent-sphere diameter and clustering by overlap (the same nodules here).
    paths = import_lidc(
        series.folder, xml, tmp_path / "eq", ConsensusRules(diameter="equivalent-sphere", cluster="overlap")
    )
    cons = truth_consensus(by["A"], holes, 0.5)
    eq = 2 * (3 * cons.sum() * SX * SY * SZ / (4 * np.pi)) ** (1 / 3)
    rows = rows_of(paths["nodules"])
    assert float(rows["N-A1"]["diameter_mm"]) == pytest.approx(eq, abs=1e-3) and len(rows) == 6
    with pytest.raises(InputError, match="--consensus must be in"):
        ConsensusRules(consensus=0)


# --- the batch -------------------------------------------------------------------------------------------------------


def test_a_lidc_tree_is_imported_case_by_case_and_a_bad_case_does_not_stop_it(tmp_path, capsys) -> None:
    root = tmp_path / "LIDC-IDRI"
    spheres, points = F.four_readers()
    good = F.write_chest_series(root / "LIDC-IDRI-0001" / "study" / "3000566")
    (good.folder / "069.xml").write_text(F.reader_xml(good, spheres, points)[0])
    # The same patient's second series, its XML kept in a separate folder (as in LIDC's XML-only download).
    second = F.write_chest_series(root / "LIDC-IDRI-0001" / "study2" / "3000999", study_uid="1.2.5")
    (root / "xml").mkdir()
    (root / "xml" / "158.xml").write_text(F.reader_xml(second, spheres[:4], [], namespace=None)[0])
    other = F.write_chest_series(root / "LIDC-IDRI-0002" / "study" / "s", patient_id="LIDC-IDRI-0002")
    (other.folder / "070.xml").write_text(F.reader_xml(other, spheres[4:7], [])[0])
    stored = (F.chest_hu() + 1024).astype(np.uint16)
    gap = F.write_series(
        root / "LIDC-IDRI-0003" / "study" / "s", stored[:-1], positions=F.positions([SZ] * 6 + [2 * SZ] + [SZ] * 11),
        patient_id="LIDC-IDRI-0003",
    )  # fmt: skip
    (gap.folder / "071.xml").write_text(F.reader_xml(gap, [], [])[0])
    (root / "xml" / "cxr.xml").write_text('<IdriReadMessage xmlns="http://www.nih.gov"/>')
    out = tmp_path / "out"
    assert main(["import-lidc", "--lidc-root", str(root), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["imported"], summary["failed"], summary["skipped"]) == (3, 1, 1)
    assert "LIDC-IDRI-0003" in summary["failures"][0] and "missing slice(s)" in summary["failures"][0]
    names = sorted(p.name for p in out.iterdir())
    tails = sorted(s.series_uid.replace(".", "")[-8:] for s in (good, second))
    assert names == sorted(
        [
            f"LIDC-TEST-0001_{t}_{s}"
            for t in tails
            for s in ("ct.nii.gz", "layout.nii.gz", "layout.seg.nrrd", "nodules.csv")
        ]
        + [f"LIDC-IDRI-0002_{s}" for s in ("ct.nii.gz", "layout.nii.gz", "layout.seg.nrrd", "nodules.csv")]
    )
    assert "failed: " in captured.err and "nodule(s) drawn" in captured.err
    rows = rows_of(out / "LIDC-IDRI-0002_nodules.csv")
    assert list(rows) == ["N-B1"] and rows["N-B1"]["n_readers"] == "3"
    # Run again: the imported cases are done and skipped, the bad one fails again.
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["import-lidc", "--lidc-root", str(root), "--out", str(out)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["imported"], summary["failed"], summary["skipped"]) == (0, 1, 4)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before
