"""Tissue classes of the phantom and their CT numbers.

The phantom first builds a tissue-class volume and only then turns it into Hounsfield units, so that tests
(and users judging realism) can measure HU per structure, and so that the layout can be derived from the
same anatomy that produced the intensities. Values are typical non-contrast chest CT numbers at 120 kVp.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

AIR = 0  # outside the body
SKIN = 1
FAT = 2  # subcutaneous fat
MUSCLE = 3
MEDIASTINAL_FAT = 4
LUNG = 5
HEART = 6
BLOOD = 7  # great vessels (aorta, pulmonary trunk, caval veins)
AIRWAY_LUMEN = 8
AIRWAY_WALL = 9
CORTICAL = 10
TRABECULAR = 11
CARTILAGE = 12
DISC = 13
CORD = 14  # spinal canal contents
LIVER = 15
ABDOMEN = 16  # spleen, stomach wall, bowel: soft tissue below the left diaphragm
BOWEL_GAS = 17
ESOPHAGUS = 18
VESSEL = 19  # intrapulmonary vessels (set where the rendered vessel occupies > half a voxel)
NODULE = 20

#: name -> (code, mean HU, standard deviation of the anatomical texture in HU)
TISSUES: Dict[str, Tuple[int, float, float]] = {
    "air": (AIR, -1000.0, 0.0),
    "skin": (SKIN, 40.0, 8.0),
    "fat": (FAT, -100.0, 10.0),
    "muscle": (MUSCLE, 45.0, 8.0),
    "mediastinal_fat": (MEDIASTINAL_FAT, -95.0, 10.0),
    "lung": (LUNG, -850.0, 0.0),  # textured separately (gravity gradient + parenchyma)
    "heart": (HEART, 40.0, 5.0),
    "blood": (BLOOD, 42.0, 4.0),
    "airway_lumen": (AIRWAY_LUMEN, -1000.0, 0.0),
    "airway_wall": (AIRWAY_WALL, 30.0, 8.0),
    "cortical_bone": (CORTICAL, 1100.0, 80.0),
    "trabecular_bone": (TRABECULAR, 250.0, 45.0),
    "cartilage": (CARTILAGE, 130.0, 20.0),
    "disc": (DISC, 85.0, 8.0),
    "cord": (CORD, 25.0, 5.0),
    "liver": (LIVER, 60.0, 6.0),
    "abdomen": (ABDOMEN, 40.0, 10.0),
    "bowel_gas": (BOWEL_GAS, -1000.0, 0.0),
    "esophagus": (ESOPHAGUS, 40.0, 8.0),
    "vessel": (VESSEL, 40.0, 0.0),
    "nodule": (NODULE, 30.0, 0.0),
}

#: Lung parenchyma: mean HU, and the increase toward the dependent (posterior) lung across the lung depth.
LUNG_HU = -855.0
LUNG_GRAVITY_HU = 50.0
LUNG_TEXTURE_HU = 22.0
VESSEL_HU = 40.0
#: Nodule CT numbers by component.
SOLID_HU = 30.0
GROUND_GLASS_HU = -620.0


def lookup_tables() -> Tuple[np.ndarray, np.ndarray]:
    """Arrays indexed by tissue code: mean HU and texture standard deviation."""
    size = max(code for code, _, _ in TISSUES.values()) + 1
    mean = np.zeros(size, dtype=np.float32)
    std = np.zeros(size, dtype=np.float32)
    for code, hu, sd in TISSUES.values():
        mean[code] = hu
        std[code] = sd
    return mean, std


def code_of(name: str) -> int:
    return TISSUES[name][0]
