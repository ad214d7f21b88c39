"""Set metrics (FID/MMD, diversity) from the Slicer module's logic on a real MRML scene (slicer-core, no Qt): scene
volumes through ``lungddpm evaluate`` in a worker, bad selections, and samples paired with the CT they came from."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
from slicer_scene_inputs import other_grid, scene_inputs, scene_phantom


@pytest.fixture(scope="module")
def phantom():
    return scene_phantom()


def test_slicer_set_metrics_over_scene_volumes(slicer_scene, phantom):
    """FID/MMD and diversity of two 'samples' against the real CT, through `lungddpm evaluate` in a worker."""
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.set_metrics_run import SetMetricsRun

    slicer = slicer_scene
    ct, seg = scene_inputs(slicer, phantom, on_other_grid=False)
    real = mb.volume_array(ct)
    lung = sitk.GetArrayFromImage(phantom.layout) > 0
    samples = []
    for k, shift in enumerate((30, 40)):
        arr = real.copy()
        arr[lung] += shift  # each "sample" brighter in the lung by a known amount: diversity 10 HU
        samples.append(so.add_volume_like(ct, arr, f"Chest synthetic {k}"))
    before = slicer.mrmlScene.GetNumberOfNodes()
    run = SetMetricsRun([ct], samples, seg)
    run.prepare()
    workdir = run.worker.workdir
    run.wait(timeout=120)
    table = run.finish()
    assert not workdir.exists()
    assert slicer.mrmlScene.GetNumberOfNodes() == before + 1
    t = table.GetTable()
    values = {t.GetValue(r, 0).ToString(): t.GetValue(r, 1).ToString() for r in range(t.GetNumberOfRows())}
    assert values["status"] == "ok", (values, run.log)
    assert values["unit"] == "patch" and int(values["n_real"]) >= 2 and int(values["n_synthetic"]) > 0
    assert float(values["fid"]) > 0
    mae = float(values["diversity r0: mean pairwise MAE (HU)"])
    assert 0 < mae <= 10.0  # exactly 10 HU inside the lung, 0 on nodule voxels drawn over it


def test_slicer_set_metrics_bad_selections_are_clear(slicer_scene, phantom):
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.set_metrics_run import SetMetricsRun

    ct, _seg = scene_inputs(slicer_scene, phantom, on_other_grid=False)
    other = so.add_volume_like(ct, mb.volume_array(ct), "copy")
    before = slicer_scene.mrmlScene.GetNumberOfNodes()
    with pytest.raises(mb.LayoutError, match="at least one real and one synthetic"):
        SetMetricsRun([ct], []).prepare()
    with pytest.raises(mb.LayoutError, match="both as real and as synthetic"):
        SetMetricsRun([ct], [ct]).prepare()
    with pytest.raises(mb.LayoutError, match="at least 2 real and 2 synthetic"):
        SetMetricsRun([ct], [other], unit="volume").prepare()
    assert slicer_scene.mrmlScene.GetNumberOfNodes() == before


def test_slicer_set_metrics_pairs_samples_with_the_ct_they_came_from(slicer_scene, phantom):
    """Two real CTs on one grid: a sample goes to the CT recorded at synthesis; off-grid samples are refused."""
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.set_metrics_run import SetMetricsRun

    ct, _seg = scene_inputs(slicer_scene, phantom, on_other_grid=False)
    twin = so.add_volume_like(ct, mb.volume_array(ct), "Twin")
    sample = so.add_volume_like(ct, mb.volume_array(ct), "Twin synthetic 0")
    sample.SetAttribute("LungDDPM.referenceVolumeID", twin.GetID())
    run = SetMetricsRun([ct, twin], [sample])
    assert run.owner(sample) == 1
    sample.RemoveAttribute("LungDDPM.referenceVolumeID")
    assert run.owner(sample) == 0  # no record: the first real CT on its grid
    grid = other_grid(phantom.ct)  # a coarser grid (its uint8 values are not used)
    moved = sitk.Resample(phantom.ct, grid, sitk.Transform(), sitk.sitkLinear, -1000, sitk.sitkInt16)
    off = so.add_volume_from_sitk(moved, "Resampled")
    with pytest.raises(mb.LayoutError, match="not on the grid of any checked real volume"):
        SetMetricsRun([ct], [off]).check_inputs()
