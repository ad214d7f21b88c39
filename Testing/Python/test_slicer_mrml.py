"""The Slicer module's logic on a real MRML scene (slicer-core, no Qt): layouts, synthesis, outputs, errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_scene_inputs import PHANTOM_SPACING, scene_inputs, scene_phantom


@pytest.fixture(scope="module")
def phantom():
    return scene_phantom()


def test_slicer_layout_from_segments_on_another_grid(slicer_scene, phantom):
    from LungDDPMLogic import layout_builder as lb
    from LungDDPMLogic import mrml_bridge as mb

    ct, seg = scene_inputs(slicer_scene, phantom)
    lung_ids, nodule_ids = mb.guess_segments(seg)
    assert len(lung_ids) == 1 and len(nodule_ids) == 1  # "Left Lung" and "NODULE 1", case-insensitive
    layout = lb.layout_from_segmentation(seg, ct)
    truth = sitk.GetArrayFromImage(phantom.layout)
    assert layout.array.shape == truth.shape and layout.array.dtype == np.uint8
    assert set(np.unique(layout.array)) == {0, 1, 2}
    lung_dice = 2 * np.sum((layout.array > 0) & (truth > 0)) / (np.sum(layout.array > 0) + np.sum(truth > 0))
    assert lung_dice > 0.85, lung_dice
    assert np.sum(layout.array == 2) > 0.5 * np.sum(truth >= 2)
    # explicit names, matched case-insensitively
    assert mb.segment_ids_from_names(seg, ["left lung"]) == lung_ids
    with pytest.raises(mb.LayoutError, match="not found"):
        mb.segment_ids_from_names(seg, ["liver"])


def _cropped_segment(slicer, seg, name, grid, box):
    """A segment whose label map covers only ``box`` ((k0, k1), (j0, j1), (i0, i1), in voxels of ``grid``, which may
    reach outside it), filled with the segment's label value, as the Segment Editor leaves an edited segment."""
    import vtk

    sid = seg.GetSegmentation().AddEmptySegment("", name, [0.5, 0.5, 0.5])
    segment = seg.GetSegmentation().GetSegment(sid)
    (k0, k1), (j0, j1), (i0, i1) = box
    image = slicer.vtkOrientedImageData()
    image.SetExtent(i0, i1 - 1, j0, j1 - 1, k0, k1 - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(segment.GetLabelValue())
    matrix = vtk.vtkMatrix4x4()
    grid.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName(), image)
    return sid


def test_slicer_segments_on_the_ct_grid_are_copied_and_equal_the_export(slicer_scene, phantom):
    """The fast path (a segment whose voxels are CT voxels is copied, not exported: about 0.7 s per segment of a
    512 x 512 x 300 CT) gives exactly the export's mask: the CT's grid, a grid shifted by whole voxels, a cropped
    label map reaching outside the CT, shared layers; another grid or another transform is exported."""
    import vtk
    from LungDDPMLogic import layout_builder as lb
    from LungDDPMLogic import scene_outputs as so

    slicer = slicer_scene
    scene = slicer.mrmlScene
    ct = so.add_volume_from_sitk(phantom.ct, "Chest")
    labels = sitk.GetArrayFromImage(phantom.layout)
    on_ct = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "on the CT")
    on_ct.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    for name, mask in (("Lung", labels == 1), ("Nodule", labels >= 2)):
        sid = on_ct.GetSegmentation().AddEmptySegment("", name, [0.5, 0.5, 0.5])
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), on_ct, sid, ct)
    on_ct.GetSegmentation().CollapseBinaryLabelmaps(False)  # lung and nodule share a layer (label values 1, 2)
    assert on_ct.GetSegmentation().GetNumberOfLayers() == 1
    _cropped_segment(slicer, on_ct, "edge", ct, ((-3, 6), (10, 20), (50, 70)))  # past k = 0 and i = 63
    shifted = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "shifted grid")
    matrix = vtk.vtkMatrix4x4()
    ct.GetIJKToRASMatrix(matrix)
    origin = lb.ijk_to_ras(ct) @ np.array([3.0, -2.0, 1.0, 1.0])  # the CT's voxel (3, -2, 1)
    for r in range(3):
        matrix.SetElement(r, 3, origin[r])
    shifted.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(shifted, np.zeros((30, 50, 50), np.uint8))
    on_shifted = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "on a shifted grid")
    on_shifted.SetReferenceImageGeometryParameterFromVolumeNode(shifted)
    box = np.zeros((30, 50, 50), np.uint8)
    box[2:9, 40:50, 5:20] = 1
    sid = on_shifted.GetSegmentation().AddEmptySegment("", "box", [0.5, 0.5, 0.5])
    slicer.util.updateSegmentBinaryLabelmapFromArray(box, on_shifted, sid, shifted)
    _cropped_segment(slicer, on_shifted, "box 2", shifted, ((20, 25), (-1, 4), (45, 55)))
    for seg in (on_ct, on_shifted):
        for sid in lb.segment_names(seg):
            fast = lb._segment_on_same_grid(seg, sid, ct)
            exported = lb._segment_exported(seg, sid, ct)
            assert fast is not None and fast.dtype == bool and exported.any(), (seg.GetName(), sid)
            assert np.array_equal(fast, exported), (seg.GetName(), sid)
    drawn_elsewhere = scene_inputs(slicer, phantom)[1]  # a coarser grid: exported
    assert all(lb._segment_on_same_grid(drawn_elsewhere, sid, ct) is None for sid in lb.segment_names(drawn_elsewhere))
    moved = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    on_ct.SetAndObserveTransformNodeID(moved.GetID())  # the CT is not under it: the export applies it
    assert all(lb._segment_on_same_grid(on_ct, sid, ct) is None for sid in lb.segment_names(on_ct))
    ct.SetAndObserveTransformNodeID(moved.GetID())  # both under one transform: copied again
    lung = lb._segment_on_same_grid(on_ct, next(iter(lb.segment_names(on_ct))), ct)
    assert lung is not None and np.array_equal(lung, labels == 1)


def test_slicer_synthetic_volume_shows_at_the_ct_window_with_automatic_window_level_off(slicer_scene, phantom):
    """A synthetic volume copies its CT's look (window/level, colours, interpolation) with automatic window/level
    off: Slicer's automatic window/level computes a histogram of every voxel on each display change (about a second
    per 512 x 512 x 300 volume on the main thread); a label map gets a label map display."""
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import scene_outputs as so

    ct = so.add_volume_from_sitk(phantom.ct, "Chest")
    look = ct.GetDisplayNode()
    assert look.GetAutoWindowLevel() and look.GetWindow() > 100  # computed from the CT's voxels
    computed = (look.GetWindow(), look.GetLevel())
    auto = so.add_volume_like(ct, mb.volume_array(ct), "Chest synthetic 0").GetDisplayNode()
    look.SetAutoWindowLevel(0)
    look.SetWindowLevel(1500.0, -600.0)  # the user's lung window
    look.SetInterpolate(0)
    lung = so.add_volume_like(ct, mb.volume_array(ct), "Chest synthetic 1").GetDisplayNode()
    assert (auto.GetWindow(), auto.GetLevel()) != (lung.GetWindow(), lung.GetLevel())
    for display, expected in ((auto, computed), (lung, (1500.0, -600.0))):
        assert display is not look and display.GetClassName() == look.GetClassName()
        assert display.GetColorNodeID() == look.GetColorNodeID() and not display.GetAutoWindowLevel()
        window_level = (display.GetWindow(), display.GetLevel())
        display.Modified()  # no automatic recomputation on a display change
        assert (display.GetWindow(), display.GetLevel()) == window_level
        assert window_level == expected
    assert auto.GetInterpolate() and not lung.GetInterpolate()
    labels = so.add_volume_like(ct, np.zeros(mb.shape_kji(ct), np.uint8), "layout", labelmap=True)
    assert labels.GetDisplayNode().IsA("vtkMRMLLabelMapVolumeDisplayNode")


def test_slicer_synthesis_outputs_geometry_provenance_hierarchy(slicer_scene, phantom, tiny_checkpoint):
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    slicer = slicer_scene
    ct, seg = scene_inputs(slicer, phantom)
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    patient = sh.CreateFolderItem(sh.GetSceneItemID(), "Patient 1")
    sh.SetItemParent(so.sh_item(ct), patient)
    registered = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    for node in (ct, seg):  # the user moved the CT and its layout together: outputs must follow
        node.SetAndObserveTransformNodeID(registered.GetID())
    settings = RunSettings(checkpoint=tiny_checkpoint, steps=2, num_samples=2, seed=5, device="cpu")
    run = SynthesisRun(ct, seg, settings)
    run.prepare()
    workdir = run.worker.workdir
    for name in ("ct.nrrd", "layout.nrrd"):  # uncompressed: gzip would cost seconds on Slicer's main thread
        assert b"encoding: raw" in (workdir / name).read_bytes()[:2000]
    run.wait(timeout=120)
    out = run.finish()
    assert not workdir.exists()  # temporary inputs and outputs removed
    assert [v.GetName() for v in out.volumes] == ["Chest synthetic 0", "Chest synthetic 1"]
    real = mb.volume_array(ct)
    for k, node in enumerate(out.volumes):
        assert np.array_equal(mb.ijk_to_ras(node), mb.ijk_to_ras(ct))
        synth = slicer.util.arrayFromVolume(node)
        assert synth.shape == real.shape
        kept = run.layout.array == 0
        assert np.abs(synth[kept].astype(np.float64) - real[kept]).max() <= 1.0  # AAS keeps the anatomy (HU)
        assert node.GetAttribute("LungDDPM.sampler") == "dpm++"
        assert node.GetAttribute("LungDDPM.steps") == "2"
        assert node.GetAttribute("LungDDPM.seed") == str(5 + k)
        assert node.GetAttribute("LungDDPM.aas") == "True"
        assert len(node.GetAttribute("LungDDPM.model.sha256")) == 64
        assert node.GetAttribute("LungDDPM.model") == tiny_checkpoint
        assert float(node.GetAttribute("LungDDPM.time_s")) > 0
    # one folder per run, next to the input (same parent), holding every output
    assert sh.GetItemParent(out.folder) == patient
    children = [sh.GetItemDataNode(i) for i in _children(sh, out.folder)]
    for node in out.nodes():
        assert node in children
    for node in [*out.volumes, out.layout]:
        assert node.GetTransformNodeID() == registered.GetID()
    assert np.array_equal(slicer.util.arrayFromVolume(out.layout), run.layout.array)
    colors = out.layout.GetDisplayNode().GetColorNode()  # the layout's own colours, not the generic table
    assert colors.GetAttribute("LungDDPM.role") == "layout colors"
    assert [colors.GetColorName(v) for v in (1, 2)] == ["lung", "nodule"]
    # metrics table: a row per (sample, region); kept anatomy has zero error
    table = out.metrics_table.GetTable()
    assert table.GetNumberOfRows() == 2 * 4
    region = table.GetColumnByName("region")
    mae = table.GetColumnByName("MAE (HU)")
    rows = {(int(table.GetColumnByName("sample").GetValue(r)), region.GetValue(r)): r for r in range(8)}
    assert mae.GetValue(rows[(0, "kept")]) <= 1.0
    assert mae.GetValue(rows[(0, "lung")]) >= 0.0 and table.GetColumnByName("SSIM").GetValue(rows[(1, "lung")]) <= 1
    # histogram chart: real and each sample per region, backed by a filled table
    chart = out.histogram_chart
    assert chart.GetNumberOfPlotSeriesNodes() == 2 * 3
    series = chart.GetNthPlotSeriesNode(0)
    data = series.GetTableNode().GetTable()
    assert data.GetNumberOfRows() > 50
    values = [data.GetColumnByName(series.GetYColumnName()).GetValue(r) for r in range(data.GetNumberOfRows())]
    assert abs(sum(values) - 1.0) < 1e-6


def _children(sh, item):
    import vtk

    ids = vtk.vtkIdList()
    sh.GetItemChildren(item, ids)
    return [ids.GetId(n) for n in range(ids.GetNumberOfIds())]


def test_slicer_cancel_leaves_scene_unchanged(slicer_scene, phantom, tiny_checkpoint):
    import time

    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    slicer = slicer_scene
    ct, seg = scene_inputs(slicer, phantom, on_other_grid=False)
    before = slicer.mrmlScene.GetNumberOfNodes()
    run = SynthesisRun(ct, seg, RunSettings(checkpoint=tiny_checkpoint, steps=200, sampler="ddim", device="cpu"))
    run.prepare()
    deadline = time.monotonic() + 60
    while run.progress.step < 1 and time.monotonic() < deadline and not run.finished:
        run.poll()
        time.sleep(0.05)
    assert run.progress.step >= 1, (run.errors, run.log)
    workdir = run.worker.workdir
    asked = time.monotonic()
    run.cancel()
    assert time.monotonic() - asked < 0.5  # non-blocking: the GUI keeps polling
    run.wait(timeout=60)
    assert run.finished and run.worker.returncode == 130  # the worker stopped cleanly within a step
    run.discard()
    assert not workdir.exists()
    assert slicer.mrmlScene.GetNumberOfNodes() == before
    assert not run.results


def test_slicer_bad_inputs_give_clear_errors_and_add_no_nodes(slicer_scene, phantom):
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    slicer = slicer_scene
    ct, seg = scene_inputs(slicer, phantom, on_other_grid=False)
    segmentation = seg.GetSegmentation()
    lung_id, nodule_id = segmentation.GetNthSegmentID(0), segmentation.GetNthSegmentID(1)
    shape = mb.shape_kji(ct)

    def check(run, match):
        before = slicer.mrmlScene.GetNumberOfNodes()
        with pytest.raises(mb.LayoutError, match=match):
            run.prepare()
        assert slicer.mrmlScene.GetNumberOfNodes() == before
        assert run.worker is None  # no process, no temporary files

    # an empty nodule segment is allowed: a healthy synthesis, with a warning
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.zeros(shape, np.uint8), seg, nodule_id, ct)
    layout = SynthesisRun(ct, seg).check_inputs()
    assert not (layout.array == 2).any() and any("empty" in w for w in layout.warnings)
    # an empty lung is an error unless the automatic lung mask is asked for
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.zeros(shape, np.uint8), seg, lung_id, ct)
    check(SynthesisRun(ct, seg), "lung segment 'Left Lung' is empty")
    auto = SynthesisRun(ct, seg, RunSettings(auto_lung=True)).check_inputs()
    assert auto.auto_lung and (auto.array == 1).sum() > 1000
    # no segment recognisable as lung
    other = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Other")
    other.GetSegmentation().AddEmptySegment("", "Liver", [1, 0, 0])
    check(SynthesisRun(ct, other), "no lung segment")
    # a segmentation drawn somewhere else (does not overlap the CT)
    far = sitk.Image(phantom.layout)
    far.SetOrigin([o + 5000.0 for o in far.GetOrigin()])
    away = so.add_volume_from_sitk(far, "far away", labelmap=True)
    seg_far = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Far")
    seg_far.SetReferenceImageGeometryParameterFromVolumeNode(away)
    sid = seg_far.GetSegmentation().AddEmptySegment("", "lung", [1, 0, 0])
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        (sitk.GetArrayFromImage(far) == 1).astype(np.uint8), seg_far, sid, away
    )
    check(SynthesisRun(ct, seg_far), "does not overlap")
    # a volume that is not a CT in Hounsfield units (an MR-like 0..1000 volume)
    mr = so.add_volume_like(ct, np.random.default_rng(0).uniform(0, 1000, shape).astype(np.float32), "MR")
    check(SynthesisRun(mr, seg), "Hounsfield")
    # the same segment as lung and nodule
    check(SynthesisRun(ct, seg, lung_ids=[lung_id], nodule_ids=[lung_id]), "both as lung and as nodule")


def test_slicer_nodule_placement_adds_a_sized_nodule_segment(slicer_scene, phantom):
    from LungDDPMLogic import layout_builder as lb
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import nodule_placement as npl

    slicer = slicer_scene
    ct, seg = scene_inputs(slicer, phantom, on_other_grid=False)
    lung = lb.layout_from_segmentation(seg, ct).array == 1
    k, j, i = np.argwhere(lung)[len(np.argwhere(lung)) // 2]
    centre = (mb.ijk_to_ras(ct) @ np.array([i, j, k, 1.0]))[:3]
    markups = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Nodule points")
    markups.AddControlPointWorld(*centre)
    sid = npl.add_nodule_at_markup(seg, ct, markups, diameter_mm=16.0, shape="round")
    segment = seg.GetSegmentation().GetSegment(sid)
    assert segment.GetName() == "Nodule 2 solid"  # "NODULE 1" is taken (names compared case-insensitively)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, ct) > 0
    ball_voxels = 4 / 3 * np.pi * 8.0**3 / np.prod(PHANTOM_SPACING)
    assert 0.6 * ball_voxels < mask.sum() < 1.5 * ball_voxels
    assert segment.HasTag("LungDDPM.shape") and segment.HasTag("LungDDPM.diameter_mm")
    assert segment.HasTag("LungDDPM.nodule_type")  # the default class (the shape is only geometry)
    assert mb.terminology_role(segment) == "nodule" and "^27925004^Nodule" in segment.GetTerminology()
    segment.SetName("renamed blob")  # the terminology code still says what it is
    assert sid in mb.guess_segments(seg)[1]
    layout = lb.layout_from_segmentation(seg, ct).array
    assert (layout[mask] == 2).all()  # the name states the class: renamed without one, it is a plain nodule
    for shape in ("lobulated", "spiculated"):
        m = npl.nodule_mask(ct, centre, 12.0, shape, seed=1)
        assert m.any()
    with pytest.raises(mb.LayoutError, match="outside"):
        npl.nodule_mask(ct, centre + 10000.0, 10.0)
    with pytest.raises(mb.LayoutError, match="diameter"):
        npl.nodule_mask(ct, centre, 50.0)


def test_slicer_loading_failure_leaves_nothing_behind(slicer_scene, phantom, tiny_checkpoint, monkeypatch):
    """All or nothing: if loading fails after the volumes and the layout were created, all of them go again (the
    layout label map is never left at the scene root)."""
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    ct, seg = scene_inputs(slicer_scene, phantom, on_other_grid=False)
    run = SynthesisRun(ct, seg, RunSettings(checkpoint=tiny_checkpoint, steps=2, device="cpu"))
    run.prepare()
    run.wait(timeout=120)

    def broken(nodes, reference):
        assert any(n.GetName() == "Chest layout" for n in nodes)  # the last step, after every node was created
        raise RuntimeError("transform failed")

    monkeypatch.setattr(so, "follow_parent_transform", broken)
    scene = slicer_scene.mrmlScene
    scene.GetSubjectHierarchyNode()  # the scene's singleton (always present in Slicer), not an output
    ids = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    with pytest.raises(RuntimeError, match="transform failed"):
        run.finish()
    left = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes()) if scene.GetNthNode(n).GetID() not in ids]
    assert not left, [(n.GetClassName(), n.GetName()) for n in left]  # nor their display nodes
    assert slicer_scene.mrmlScene.GetFirstNodeByName("Chest layout") is None


def test_slicer_self_test_flow_runs_headless(slicer_scene, tmp_path):
    """What LungDDPMTest runs inside Slicer (phantom by the engine, the bundled demo model, FID/MMD), here."""
    from LungDDPMLogic.phantom_scene import self_test
    from LungDDPMLogic.result_views import show_results

    outputs, fid = self_test(tmp_path)
    assert outputs.metrics_error == "" and [v.GetName() for v in outputs.volumes] == ["Phantom CT synthetic 0"]
    assert outputs.volumes[0].GetAttribute("LungDDPM.model.sha256")  # the bundled model, hashed by the worker
    assert outputs.metrics_table.GetTable().GetNumberOfRows() == 4
    assert fid["status"] == "ok" and float(fid["fid"]) >= 0.0
    show_results(None, outputs)  # no application here: nothing to show, and no error
