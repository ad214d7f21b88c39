"""Inputs for the headless MRML tests: a chest phantom, and it as a CT volume node plus a segmentation node whose
segments were drawn on another grid (as a Segment Editor might)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from LungDDPMLib.phantom import NoduleSpec, make_phantom

PHANTOM_SIZE, PHANTOM_SPACING = (64, 64, 40), (3.2, 3.2, 6.0)


def scene_phantom():
    """A small chest phantom with one 14 mm solid nodule on the right."""
    return make_phantom(
        PHANTOM_SIZE, PHANTOM_SPACING, seed=3, nodules=[NoduleSpec(14.0, "solid", "round", side="right")]
    )


def other_grid(image: sitk.Image) -> sitk.Image:
    """The same patient space sampled on a coarser, shifted, smaller grid (as a Segment Editor might)."""
    spacing = [s * 1.5 for s in image.GetSpacing()]
    size = [int(n / 1.5) - 2 for n in image.GetSize()]
    origin = [o + 2.0 * s for o, s in zip(image.GetOrigin(), image.GetSpacing())]
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetSpacing(spacing)
    ref.SetOrigin(origin)
    ref.SetDirection(image.GetDirection())
    return sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def scene_inputs(slicer, phantom, names=("Left Lung", "NODULE 1"), on_other_grid=True):
    """CT volume node + segmentation node (lung and nodule segments, drawn on another grid by default)."""
    from LungDDPMLogic import scene_outputs as so

    ct = so.add_volume_from_sitk(phantom.ct, "Chest")
    layout = other_grid(phantom.layout) if on_other_grid else phantom.layout
    drawing = so.add_volume_from_sitk(layout, "drawing grid", labelmap=True)
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Layout")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(drawing)
    labels = sitk.GetArrayFromImage(layout)
    # the phantom's nodule is labelled by its class (3 solid); named "NODULE 1" it is a nodule of unstated type (2)
    for name, mask in zip(names, (labels == 1, labels >= 2)):
        sid = seg.GetSegmentation().AddEmptySegment("", name, [0.5, 0.5, 0.5])
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), seg, sid, drawing)
    slicer.mrmlScene.RemoveNode(drawing)
    return ct, seg
