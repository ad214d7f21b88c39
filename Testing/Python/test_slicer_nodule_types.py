"""Nodule density classes on the Slicer side (real MRML scene, slicer-core): typed segment names become typed layout
labels, placement by clicking states the class, the phantom scene has typed segments, and roi mode finds its model.

Labels: 2 nodule of unstated type, 3 solid, 4 part-solid, 5 ground-glass (``LungDDPMLib.config.LABEL_OF_TYPE``).
"""

from __future__ import annotations

import conftest_slicer
import numpy as np
import pytest
import SimpleITK as sitk

from LungDDPMLib import config
from LungDDPMLib.phantom import NoduleSpec, make_phantom

pytestmark = pytest.mark.skipif(not conftest_slicer.slicer_core_available(), reason="slicer-core is not installed")

SIZE, SPACING = (40, 36, 24), (2.0, 2.0, 3.0)  # x, y, z


def _ct(slicer):
    """A small CT volume node (HU: soft tissue, lung, air at the edges, some noise) on a 2x2x3 mm grid."""
    from LungDDPMLogic import scene_outputs as so

    array = np.where(LUNG > 0, -850, 40) + np.random.default_rng(0).normal(0, 20, LUNG.shape)
    array[:, :2] = -1000
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing(SPACING)
    image.SetOrigin((-40.0, -36.0, -36.0))
    return so.add_volume_from_sitk(image, "Chest")


def _box(k, j, i):
    mask = np.zeros(SIZE[::-1], np.uint8)
    mask[k, j, i] = 1
    return mask


def _segmentation(slicer, ct, segments, name="Layout"):
    """A segmentation node with ``segments`` [(name, mask (K, J, I))] in this order; returns (node, {name: ID})."""
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    ids = {}
    for segment_name, mask in segments:
        sid = seg.GetSegmentation().AddEmptySegment("", segment_name, [0.5, 0.5, 0.5])
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, ct)
        ids[segment_name] = sid
    return seg, ids


LUNG = _box(slice(2, 22), slice(2, 34), slice(2, 38))
#: Disjoint nodules, each named the way a user might, with the label the layout must give it.
NAMED_NODULES = [
    ("nodule GGO", _box(slice(4, 7), slice(4, 8), slice(4, 8)), 5),
    ("Nodule part-solid", _box(slice(4, 7), slice(4, 8), slice(12, 16)), 4),
    ("solid nodule", _box(slice(4, 7), slice(4, 8), slice(20, 24)), 3),
    ("GGO", _box(slice(10, 13), slice(4, 8), slice(4, 8)), 5),  # named only by its class: still a nodule
    ("Nodule 7", _box(slice(10, 13), slice(4, 8), slice(12, 16)), 2),  # no class stated: label 2 as before
    ("lesion, partly solid", _box(slice(10, 13), slice(4, 8), slice(20, 24)), 4),
]


def test_slicer_label_values_agree_with_the_engine():
    conftest_slicer.add_module_path()
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import nodule_placement as npl

    assert mb.LABEL_OF_TYPE == config.LABEL_OF_TYPE
    assert (mb.LABEL_LUNG, mb.LABEL_NODULE) == (config.LABEL_LUNG, config.LABEL_NODULE)
    assert set(mb.NODULE_LABELS) == set(config.NODULE_LABELS)
    assert npl.NODULE_TYPES == config.NODULE_TYPES and npl.NODULE_TYPES[0] == "solid"
    assert sorted(mb.NODULE_PAINT_ORDER) == sorted(config.NODULE_LABELS)
    values = np.arange(256, dtype=np.uint8)  # is_nodule_label tests a range: exactly the nodule labels are in it
    assert values[mb.is_nodule_label(values)].tolist() == sorted(config.NODULE_LABELS)


def test_slicer_typed_segment_names_give_typed_labels(slicer_scene):
    from LungDDPMLogic import layout_builder as lb
    from LungDDPMLogic import mrml_bridge as mb

    ct = _ct(slicer_scene)
    seg, ids = _segmentation(slicer_scene, ct, [("Lung", LUNG)] + [(n, m) for n, m, _ in NAMED_NODULES])
    lungs, nodules = mb.guess_segments(seg)
    assert lungs == [ids["Lung"]]
    assert nodules == [ids[n] for n, _, _ in NAMED_NODULES]  # "GGO" alone counts as a nodule
    layout = lb.layout_from_segmentation(seg, ct)
    for name, mask, label in NAMED_NODULES:
        assert (layout.array[mask > 0] == label).all(), name
        assert layout.nodule_labels[ids[name]] == label, name
    others = np.ones(LUNG.shape, bool)
    for _, mask, _ in NAMED_NODULES:
        others &= mask == 0
    assert set(np.unique(layout.array[others]).tolist()) == {0, 1}  # lung and background unchanged
    assert not any("overlap" in w for w in layout.warnings)
    # the engine reads the same names the same way (one rule for the CLI and for Slicer)
    from LungDDPMLib.data.nodule_types import type_from_name

    for name, _, label in NAMED_NODULES:
        assert config.LABEL_OF_TYPE.get(type_from_name(name), 2) == label, name


def test_slicer_overlapping_nodules_of_different_classes_denser_wins_in_any_order(slicer_scene):
    """Where nodule segments of different classes overlap, a stated class beats none and a denser class a lighter
    one (solid > part-solid > ground-glass > unstated), whatever the order of the segments; a warning says so."""
    from LungDDPMLogic import layout_builder as lb

    ct = _ct(slicer_scene)
    ggo = _box(slice(6, 14), slice(8, 20), slice(8, 20))
    solid = _box(slice(9, 12), slice(12, 16), slice(12, 16))  # a solid core inside the ground glass
    plain = _box(slice(6, 14), slice(16, 24), slice(16, 24))  # an untyped nodule overlapping the ground glass
    part = _box(slice(10, 16), slice(18, 22), slice(18, 22))  # a part-solid one over the untyped and the GGO
    segments = [("Lung", LUNG), ("Nodule GGO", ggo), ("Nodule solid", solid), ("Nodule", plain), ("part-solid", part)]
    arrays = []
    for n, order in enumerate((segments, segments[:1] + segments[1:][::-1])):
        seg, ids = _segmentation(slicer_scene, ct, order, name=f"Layout {n}")
        layout = lb.layout_from_segmentation(seg, ct)
        arrays.append(layout.array)
        # the explicit choice in another order gives the same layout too
        reversed_ids = [ids[name] for name, _ in segments[1:]][::-1]
        assert np.array_equal(lb.layout_from_segmentation(seg, ct, [ids["Lung"]], reversed_ids).array, layout.array)
        overlaps = [w for w in layout.warnings if "overlap" in w]
        assert overlaps and all("a denser class over a lighter one" in w for w in overlaps), layout.warnings
    assert np.array_equal(arrays[0], arrays[1])
    array = arrays[0]
    assert (array[solid > 0] == 3).all()
    assert (array[(part > 0) & (solid == 0)] == 4).all()
    assert (array[(ggo > 0) & (solid == 0) & (part == 0)] == 5).all()  # ground glass wins over the untyped one
    assert (array[(plain > 0) & (ggo == 0) & (part == 0)] == 2).all()


def _lung_point(ct, offset_mm=(0.0, 0.0, 0.0)):
    from LungDDPMLogic import mrml_bridge as mb

    k, j, i = 12, 18, 20
    return (mb.ijk_to_ras(ct) @ np.array([i, j, k, 1.0]))[:3] + np.asarray(offset_mm)


def _tag(segment, key):
    import vtk

    value = vtk.reference("")
    assert segment.GetTag(key, value), f"no tag {key}"
    return str(value)


@pytest.mark.parametrize("nodule_type, label", [("solid", 3), ("part-solid", 4), ("ground-glass", 5)])
def test_slicer_placed_nodule_states_its_type_in_name_and_tag(slicer_scene, nodule_type, label):
    from LungDDPMLogic import layout_builder as lb
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import nodule_placement as npl

    slicer = slicer_scene
    ct = _ct(slicer)
    seg, _ = _segmentation(slicer, ct, [("Lung", LUNG), ("Nodule 1", _box(slice(3, 5), slice(3, 5), slice(3, 5)))])
    markups = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Nodule points")
    markups.AddControlPointWorld(*_lung_point(ct))
    sid = npl.add_nodule_at_markup(seg, ct, markups, diameter_mm=10.0, shape="round", nodule_type=nodule_type)
    segment = seg.GetSegmentation().GetSegment(sid)
    assert segment.GetName() == f"Nodule 2 {nodule_type}"  # "Nodule 1" is taken
    assert mb.nodule_type_from_name(segment.GetName()) == nodule_type
    assert _tag(segment, "LungDDPM.nodule_type") == nodule_type
    assert segment.GetColor() == pytest.approx(npl.NODULE_COLORS[nodule_type])
    assert sid in mb.guess_segments(seg)[1]
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, ct) > 0
    layout = lb.layout_from_segmentation(seg, ct)
    assert mask.any() and (layout.array[mask] == label).all()
    assert layout.nodule_labels[sid] == label
    # the next placed nodule is number 3, whatever the class of number 2
    markups.AddControlPointWorld(*_lung_point(ct, (-20.0, 0.0, 0.0)))
    second = npl.add_nodule_at_markup(seg, ct, markups, diameter_mm=6.0)
    assert seg.GetSegmentation().GetSegment(second).GetName() == "Nodule 3 solid"  # solid by default


def test_slicer_placement_type_errors_add_nothing(slicer_scene):
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic import nodule_placement as npl

    ct = _ct(slicer_scene)
    seg, _ = _segmentation(slicer_scene, ct, [("Lung", LUNG)])
    with pytest.raises(mb.LayoutError, match=r"unknown nodule type 'calcified'.*solid, part-solid, ground-glass"):
        npl.add_nodule_segment(seg, ct, _lung_point(ct), nodule_type="calcified")
    with pytest.raises(mb.LayoutError, match="states a ground-glass nodule, but a solid nodule"):
        npl.add_nodule_segment(seg, ct, _lung_point(ct), name="my GGO", nodule_type="solid")
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    # a given name that states no class gets the class appended; one that states it is kept
    a = npl.add_nodule_segment(seg, ct, _lung_point(ct), name="Lesion A", nodule_type="part-solid")
    b = npl.add_nodule_segment(seg, ct, _lung_point(ct, (-20.0, 0, 0)), name="B GGO", nodule_type="ground-glass")
    names = mb.segment_names(seg)
    assert (names[a], names[b]) == ("Lesion A part-solid", "B GGO")


def test_slicer_phantom_scene_has_typed_nodule_segments(slicer_scene, tmp_path):
    """The phantom's layout carries each nodule's class (3/4/5); the scene gets one coded segment per class, named
    so that the layout read back from the scene is the phantom's own, label for label."""
    from LungDDPMLogic import layout_builder as lb
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic.phantom_scene import load_phantom, phantom_segments

    nodules = [
        NoduleSpec(12.0, "solid", "round", side="right"),
        NoduleSpec(12.0, "part-solid", "round", side="left"),
        NoduleSpec(10.0, "ground-glass", "round", side="left"),
    ]
    phantom = make_phantom((64, 64, 40), (3.2, 3.2, 6.0), seed=3, nodules=nodules)
    labels = sitk.GetArrayFromImage(phantom.layout)
    assert set(np.unique(labels).tolist()) == {0, 1, 3, 4, 5}
    sitk.WriteImage(phantom.ct, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(phantom.layout, str(tmp_path / "layout.nrrd"))
    ct, seg = load_phantom(tmp_path / "ct.nrrd", tmp_path / "layout.nrrd")
    names = list(mb.segment_names(seg).values())
    assert names == ["Lung", "Nodule solid", "Nodule part-solid", "Nodule ground-glass"]
    segmentation = seg.GetSegmentation()
    roles = [mb.terminology_role(segmentation.GetNthSegment(n)) for n in range(segmentation.GetNumberOfSegments())]
    assert roles == ["lung", "nodule", "nodule", "nodule"]
    layout = lb.layout_from_segmentation(seg, ct)
    assert np.array_equal(layout.array, labels)
    # untyped nodules (label 2) and a healthy phantom keep a plain "Nodule" segment
    assert [n for n, _, _ in phantom_segments(np.array([0, 1, 2, 5]))] == ["Lung", "Nodule", "Nodule ground-glass"]
    assert [n for n, _, _ in phantom_segments(np.array([0, 1]))] == ["Lung", "Nodule"]


def test_slicer_roi_mode_without_a_model_file_uses_the_bundled_roi_model():
    """Mode 'roi' in the GUI reaches the worker's job; with no model file the model line describes the file the
    worker then loads (the engine's registry.bundled_model('roi'))."""
    conftest_slicer.add_module_path()
    from LungDDPMLogic.model_info import model_to_describe
    from LungDDPMLogic.synthesis_run import RunSettings

    from LungDDPMLib.registry import bundled_model

    fields = RunSettings(mode="roi").job_fields()
    assert fields["mode"] == "roi" and fields["checkpoint"] == ""
    assert RunSettings(mode="auto").job_fields()["mode"] is None
    assert model_to_describe("", "roi") == str(bundled_model("roi"))
    assert model_to_describe(".", "roi") == str(bundled_model("roi"))
    assert model_to_describe("", "auto") == "" and model_to_describe("", "full") == ""  # the demo model
    assert model_to_describe("/models/mine.pt", "roi") == "/models/mine.pt"


def test_slicer_synthesis_reports_what_the_model_did_with_the_nodule_types(slicer_scene, tiny_checkpoint):
    """A typed layout reaches the worker as labels 3-5; a model without type conditioning draws them as plain
    nodules, and the provenance attributes and the run's notes say so."""
    from LungDDPMLogic import mrml_bridge as mb
    from LungDDPMLogic.synthesis_run import RunSettings, SynthesisRun

    ct = _ct(slicer_scene)
    ggo = _box(slice(8, 14), slice(12, 20), slice(12, 20))
    seg, _ = _segmentation(slicer_scene, ct, [("Lung", LUNG), ("nodule GGO", ggo)])
    run = SynthesisRun(ct, seg, RunSettings(checkpoint=tiny_checkpoint, steps=2, device="cpu"))
    run.prepare()
    assert (run.layout.array[ggo > 0] == 5).all()
    run.wait(timeout=180)
    outputs = run.finish()
    node = outputs.volumes[0]
    assert node.GetAttribute("LungDDPM.nodule_types.used") == "False", run.log
    assert "not conditioned on nodule type" in node.GetAttribute("LungDDPM.nodule_types.note")
    assert outputs.notes == [node.GetAttribute("LungDDPM.nodule_types.note")]
    assert mb.volume_array(outputs.layout)[ggo > 0].tolist() == [5] * int(ggo.sum())


def test_slicer_layout_label_map_names_and_colours_each_class(slicer_scene):
    """A layout label map shows lung and each nodule class in its own colour and name (the generic table's names
    for 1-5 are other anatomy); the names read back as the same classes; one table per scene, shared by runs."""
    from LungDDPMLogic import scene_outputs as so
    from LungDDPMLogic.nodule_placement import NODULE_COLORS

    from LungDDPMLib.data.nodule_types import type_from_name

    scene = slicer_scene.mrmlScene
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    slicer_scene.util.updateVolumeFromArray(ct, np.full((4, 5, 6), -1000, np.int16))
    layouts = [
        so.add_volume_like(ct, np.arange(120, dtype=np.uint8).reshape(4, 5, 6) % 6, f"L{n}", True) for n in (0, 1)
    ]
    created = [so.show_with_layout_colors(node) for node in layouts]
    table = layouts[0].GetDisplayNode().GetColorNode()
    assert created == [table, None] and layouts[1].GetDisplayNode().GetColorNode() is table
    tables = scene.GetNodesByClass("vtkMRMLColorTableNode")
    ours = [tables.GetItemAsObject(n) for n in range(tables.GetNumberOfItems())]
    assert [t.GetAttribute("LungDDPM.role") for t in ours].count("layout colors") == 1
    assert table.GetNumberOfColors() == 6 and not table.GetHideFromEditors()  # hidden nodes are not saved
    names = [table.GetColorName(v) for v in range(6)]
    assert names[:3] == ["background", "lung", "nodule"]
    assert {v: type_from_name(names[v]) for v in (2, 3, 4, 5)} == {
        config.LABEL_NODULE: None,
        **{v: k for k, v in config.LABEL_OF_TYPE.items()},
    }
    rgba = [0.0] * 4
    table.GetColor(0, rgba)
    assert rgba[3] == 0.0  # background transparent
    for kind, value in config.LABEL_OF_TYPE.items():
        table.GetColor(value, rgba)
        assert np.allclose(rgba, (*NODULE_COLORS[kind], 1.0), atol=1 / 255), kind  # as placed nodule segments
    colours = set()
    for value in range(1, 6):
        table.GetColor(value, rgba)
        colours.add(tuple(np.round(rgba, 3)))
    assert len(colours) == 5  # every class its own colour
