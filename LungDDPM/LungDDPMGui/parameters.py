"""The typed parameter node of the module (saved with the scene) and the setting that outlives scenes."""

# Slicer parameter-node fields are camelCase like the rest of Slicer's Python API.
# ruff: noqa: N815

from __future__ import annotations

from typing import Annotated

from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

SETTINGS_CHECKPOINT = "LungDDPM/Checkpoint"


@parameterNodeWrapper
class LungDDPMParameterNode:
    """Everything the GUI shows, saved with the scene. Steps 0 means the sampler's default, blend-from -1 every step.

    ``lungSegmentIds``/``noduleSegmentIds`` (segment IDs as a JSON list, so renaming a segment does not change the
    choice) and ``checkpoint`` (a str: Slicer's Path connector would show an empty path as ".") are synced with
    their widgets in code, not through ``SlicerParameterName``.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputSegmentation: vtkMRMLSegmentationNode
    lungSegmentIds: str = ""
    noduleSegmentIds: str = ""
    autoLung: bool = False
    noduleMarkups: vtkMRMLMarkupsFiducialNode
    noduleDiameterMm: Annotated[float, WithinRange(3.0, 30.0)] = 10.0
    noduleShape: Annotated[str, Choice(["round", "lobulated", "spiculated"])] = "round"
    noduleType: Annotated[str, Choice(["solid", "part-solid", "ground-glass"])] = "solid"
    checkpoint: str = ""
    # auto: the model's own sampler - dpm++, or for a distilled student the sampler and steps it was distilled for.
    sampler: Annotated[str, Choice(["auto", "dpm++", "ddim", "ddpm"])] = "auto"
    steps: Annotated[int, WithinRange(0, 250)] = 0
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    numSamples: Annotated[int, WithinRange(1, 16)] = 1
    mode: Annotated[str, Choice(["auto", "full", "roi"])] = "auto"
    aas: bool = True
    blendFrom: Annotated[int, WithinRange(-1, 249)] = -1  # -1: every step; B: steps from levels <= B
    precision: Annotated[str, Choice(["auto", "fp32", "bf16"])] = "auto"
    recipe: Annotated[str, Choice(["lungddpm", "published"])] = "lungddpm"  # published: the authors' sample.py
    # auto: each nodule class at its typical HU (models that draw classes); off: the model alone; custom: the text
    # of `lungddpm synthesize --density`, e.g. "ground-glass=-650,part-solid=-600/0@0.5".
    density: Annotated[str, Choice(["auto", "off", "custom"])] = "auto"
    densityCustom: str = ""
    # A folder for marked DICOM copies of each synthetic CT (series + SEG, `LungDDPMLib.dicom`); empty: none.
    dicomFolder: str = ""
