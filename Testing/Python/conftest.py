"""Shared fixtures for the data and phantom tests: one small phantom per session and a DICOM writer.

The suite runs torch on one CPU thread (and so do the worker and CLI processes it starts, through
``OMP_NUM_THREADS``), unless ``OMP_NUM_THREADS`` is set. Why: the tests' tensors are small, and on a 2-core machine
that others share, OpenMP threads spin waiting for each other - measured here under load, the bundled demo model's
test took 69 s with two threads and 32 s with one, the tiny training run 572 s and 92 s, with the same results.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDDPMLib.phantom import NoduleSpec, make_phantom

torch.set_num_threads(int(os.environ.setdefault("OMP_NUM_THREADS", "1")))

SMALL_SIZE = (96, 96, 64)
SMALL_SPACING = (2.0, 2.0, 3.0)
SMALL_NODULES = (
    NoduleSpec(14.0, "solid", "lobulated", side="right"),
    NoduleSpec(12.0, "part-solid", "spiculated", side="left"),
    NoduleSpec(10.0, "ground-glass", "round", juxta_pleural=True, side="left"),
)


@pytest.fixture(scope="session")
def small_phantom():
    """96x96x64 phantom at 2x2x3 mm with one nodule of every kind (about 0.3 s)."""
    return make_phantom(SMALL_SIZE, SMALL_SPACING, seed=7, nodules=list(SMALL_NODULES))


def _write_dicom_series(image: sitk.Image, folder: Path) -> Path:
    """Write an int16 CT as a DICOM series (one file per slice), geometry in the standard tags."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1." + str(abs(hash(str(folder))) % 10**12)
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        pos = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000d": series + ".0",
            "0020|000e": series,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.10f}" for v in pos),
            "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0028|0030": f"{image.GetSpacing()[1]:.10f}\\{image.GetSpacing()[0]:.10f}",
            "0018|0050": f"{image.GetSpacing()[2]:.10f}",
            "0028|1052": "0",
            "0028|1053": "1",
            "0008|0018": series + f".{k + 1}",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(sl)
    return folder


@pytest.fixture
def write_dicom_series():
    return _write_dicom_series


def rotated_direction(angle_deg: float = 20.0) -> tuple:
    """A proper rotation about an oblique axis: non-identity, non-axis-aligned direction cosines."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    a = np.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    r = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    return tuple(r.ravel())


@pytest.fixture(scope="module")
def layout():
    """A 16^3 layout for sampler tests: a lung box with a nodule cube inside (labels 0/1/2)."""
    import torch

    lay = torch.zeros(16, 16, 16, dtype=torch.long)
    lay[3:13, 2:14, 3:13] = 1
    lay[6:10, 6:10, 6:10] = 2
    return lay


@pytest.fixture(scope="module")
def reference():
    """A 16^3 normalised reference CT in [-0.8, 0.8] (seeded), for AAS in sampler tests."""
    import torch

    g = torch.Generator().manual_seed(5)
    return (torch.rand(16, 16, 16, generator=g) * 1.6 - 0.8).float()


# Shared by the Slicer-side test files (the helpers live in conftest_slicer, which imports no Slicer at load time).
@pytest.fixture
def slicer_scene():
    import conftest_slicer

    yield from conftest_slicer.empty_scene()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import conftest_slicer

    return conftest_slicer.write_tiny_checkpoint(tmp_path_factory.mktemp("model"))
