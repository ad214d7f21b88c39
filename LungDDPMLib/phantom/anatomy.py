"""Macroscopic thoracic anatomy of the phantom as a tissue-class volume.

The body is built from nested analytic shapes (skin, subcutaneous fat, chest-wall muscle around the
thoracic cavity), then the cavity is divided into the two lungs, the mediastinum with heart, great vessels,
trachea and oesophagus, and the abdomen below the diaphragm domes; the spine, ribs and sternum are drawn on
top. Anatomical landmarks are written in adult millimetres (see :mod:`.frame`) so that the proportions hold
at any field of view. Intrapulmonary vessels and airways come later (:mod:`.vessels`), because they must
know where the lungs are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from . import tissues as T
from .frame import Frame
from .tubes import paint_tube, polyline

# Cross-sections (adult mm): body and thoracic cavity as superellipses, wider than deep.
BODY_A, BODY_B_ANT, BODY_B_POST, BODY_P_ANT, BODY_P_POST = 165.0, 115.0, 108.0, 2.2, 2.8
CAVITY_A, CAVITY_B_ANT, CAVITY_B_POST, CAVITY_P = 132.0, 88.0, 84.0, 2.3
MEDIAN_X = 3.0  # the mediastinum sits slightly left of the midline
VERTEBRA_Y, VERTEBRA_RX, VERTEBRA_RY = 45.0, 20.0, 16.0
T1_W = 0.955  # height fraction of the first thoracic vertebra (the lung apex level)
APEX_W, APEX_START_W = 0.95, 0.78

# Great vessels, airways and oesophagus: polylines of (adult x, adult y, height fraction) and radii (mm).
GREAT_VESSELS = {
    "aorta": (
        [
            (-12, -28, 0.40),
            (-10, -24, 0.62),
            (-6, -16, 0.72),
            (4, 0, 0.77),
            (16, 16, 0.755),
            (25, 24, 0.71),
            (26, 24, 0.55),
            (18, 22, 0.25),
            (10, 22, 0.0),
        ],
        [14, 14, 13, 12, 11.5, 11, 10.5, 10, 10],
    ),
    "pulmonary_trunk": ([(18, -32, 0.44), (14, -22, 0.55), (8, -8, 0.60)], [14, 14, 12]),
    "right_pulmonary_artery": ([(8, -8, 0.60), (-20, 0, 0.60), (-48, 4, 0.585)], [11, 10, 9]),
    "left_pulmonary_artery": ([(8, -8, 0.60), (30, 4, 0.625), (50, 14, 0.61)], [11, 10, 9]),
    "right_pulmonary_vein": ([(-50, 14, 0.50), (-25, 16, 0.47), (2, 18, 0.45)], [8, 8, 9]),
    "left_pulmonary_vein": ([(50, 18, 0.52), (26, 18, 0.48), (6, 18, 0.45)], [8, 8, 9]),
    "superior_vena_cava": ([(-26, -14, 0.44), (-26, -12, 0.75), (-22, -10, 1.02)], [10, 10, 9]),
    "brachiocephalic_trunk": ([(-2, -10, 0.76), (-10, -8, 0.88), (-14, -6, 1.02)], [7, 6, 6]),
    "left_carotid": ([(6, -4, 0.77), (8, -4, 1.02)], [4.5, 4.5]),
    "left_subclavian": ([(14, 6, 0.765), (22, 6, 0.9), (30, 8, 1.02)], [5.5, 5.5, 5.5]),
    "left_brachiocephalic_vein": ([(45, -16, 1.02), (12, -22, 0.84), (-24, -12, 0.80)], [6, 6, 7]),
}
TRACHEA = ([(0, 4, 1.02), (0, 6, 0.80), (0, 8, 0.64)], [9, 9, 9])
MAIN_BRONCHI = {
    "right": ([(0, 8, 0.645), (-22, 10, 0.615), (-44, 10, 0.585)], [7, 6.5, 5.5]),
    "left": ([(0, 8, 0.645), (26, 12, 0.625), (46, 16, 0.60)], [6.5, 6, 5]),
}
ESOPHAGUS = ([(8, 22, 1.02), (10, 22, 0.6), (16, 20, 0.3), (25, 8, 0.18)], [6.5, 6.5, 6.5, 6.5])


@dataclass
class Anatomy:
    """The tissue-class volume and what later stages need to know about it."""

    tissue: np.ndarray  # uint8 (z, y, x), codes from :mod:`.tissues`
    lungs: Dict[str, np.ndarray]  # 'left' / 'right' -> bool lung region (before vessels and nodules)
    tree_roots: Dict[str, List[Tuple[str, np.ndarray, float]]] = field(default_factory=dict)


def _superellipse_radius(x, y, a, b_ant, b_post, p_ant, p_post):
    """Normalised radius (1 on the contour) of a shape with different anterior and posterior halves."""
    b = np.where(y < 0, b_ant, b_post)
    p = np.where(y < 0, p_ant, p_post)
    return (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)


def _ray_depth(x, y, r):
    """Distance (mm) from a point to the contour along the ray from the centre; close to the normal
    distance for these mildly eccentric shapes, and cheap to evaluate everywhere."""
    rho = np.sqrt(x * x + y * y)
    return rho * (1.0 / np.maximum(r, 1e-6) - 1.0)


def cavity_taper(w):
    """Lateral and antero-posterior scale of the rib cage at height ``w``: the thorax is a truncated cone,
    widest at the diaphragm and narrowing toward the apex."""
    t = np.clip((np.asarray(w, dtype=np.float32) - 0.35) / 0.6, 0.0, 1.0) ** 1.3
    return 1.0 - 0.22 * t, 1.0 - 0.10 * t


def _cavity_radius(x, y, s, fa, fb):
    """Normalised radius of the thoracic cavity contour (1 on the pleura) for taper factors ``fa, fb``."""
    b_post = (CAVITY_B_POST - 10.0 * np.exp(-((x / (45.0 * s)) ** 2))) * s * fb
    return _superellipse_radius(x, y, CAVITY_A * s * fa, CAVITY_B_ANT * s * fb, b_post, CAVITY_P, CAVITY_P)


def pleura_depth(frame: Frame, points: np.ndarray) -> np.ndarray:
    """Distance (mm, along the ray from the body axis) from physical ``(z, y, x)`` points to the
    chest-wall pleura; positive inside the cavity. Used to put juxta-pleural nodules against the wall."""
    points = np.atleast_2d(points)
    w = (points[:, 0] / ((frame.shape[0] - 1) * frame.spacing[0])) + 0.5
    fa, fb = cavity_taper(w)
    r = _cavity_radius(points[:, 2], points[:, 1], frame.scale, fa, fb)
    return _ray_depth(points[:, 2], points[:, 1], r)


def _body_wall(frame: Frame) -> np.ndarray:
    """2D (y, x) skin, fat and muscle layers; the body is prismatic over the imaged range."""
    s = frame.scale
    y = frame.axis_mm(1)[:, None]
    x = frame.axis_mm(2)[None, :]
    r_body = _superellipse_radius(x, y, BODY_A * s, BODY_B_ANT * s, BODY_B_POST * s, BODY_P_ANT, BODY_P_POST)
    depth = _ray_depth(x, y, r_body)
    cos2 = x * x / np.maximum(x * x + y * y, 1e-6)
    fat = s * (8.0 + 14.0 * cos2)  # thicker flanks, thin over the sternum and spine
    wall = np.full(depth.shape, T.AIR, dtype=np.uint8)
    inside = r_body < 1.0
    wall[inside] = T.MUSCLE
    wall[inside & (depth < 2.0 + fat)] = T.FAT
    wall[inside & (depth < 2.0)] = T.SKIN
    return wall


def _cavity(frame: Frame) -> np.ndarray:
    """3D thoracic cavity (inside the ribs, in front of and beside the spine), tapering upward."""
    s = frame.scale
    y = frame.axis_mm(1)[:, None]
    x = frame.axis_mm(2)[None, :]
    spine_block = (np.abs(x) < 30.0 * s) & (y > (VERTEBRA_Y - VERTEBRA_RY - 3.0) * s)
    fa, fb = cavity_taper(frame.w[:, 0, 0])
    cavity = np.empty(frame.shape, dtype=bool)
    for k in range(frame.shape[0]):
        cavity[k] = (_cavity_radius(x, y, s, fa[k], fb[k]) < 1.0) & ~spine_block
    return cavity


def _diaphragm_w(frame: Frame) -> np.ndarray:
    """Height fraction of the diaphragm surface per (y, x): two domes, the right one higher (liver)."""
    s = frame.scale
    y = frame.axis_mm(1)[:, None]
    x = frame.axis_mm(2)[None, :]
    right = 0.33 - 0.14 * (((x + 55 * s) / (75 * s)) ** 2 + ((y + 5 * s) / (95 * s)) ** 2)
    left = 0.29 - 0.14 * (((x - 55 * s) / (75 * s)) ** 2 + ((y + 5 * s) / (95 * s)) ** 2)
    return np.maximum(right, left).astype(np.float32)


def _ellipsoid(
    frame: Frame, centre: np.ndarray, radii: Tuple[float, float, float], angle: float = 0.0, shear: float = 0.0
):
    """Box and mask of an ellipsoid (radii z, y, x in mm), rotated by ``angle`` in the axial plane and
    sheared so that its axial centre moves by ``shear`` mm in x per mm in z (a tilt in the coronal plane)."""
    reach = max(radii) * (1.0 + abs(shear))
    box = frame.box(centre - reach, centre + reach)
    cz, cy, cx = frame.box_coords(box)
    dy, dx = cy - centre[1], cx - centre[2] - shear * (cz - centre[0])
    u = np.cos(angle) * dx - np.sin(angle) * dy
    v = np.sin(angle) * dx + np.cos(angle) * dy
    mask = ((cz - centre[0]) / radii[0]) ** 2 + (v / radii[1]) ** 2 + (u / radii[2]) ** 2 <= 1.0
    return box, mask


def _paint_spine(tissue: np.ndarray, frame: Frame) -> None:
    """Vertebral bodies with discs and endplates, canal, laminae, spinous and transverse processes."""
    s = frame.scale
    box = frame.box(np.array([-1e9, 20 * s, -42 * s]), np.array([1e9, 106 * s, 42 * s]))
    _, cy, cx = frame.box_coords(box)
    cy, cx = cy[0], cx[0]
    cortex = 1.2
    body = ((cx / (VERTEBRA_RX * s)) ** 2 + ((cy - VERTEBRA_Y * s) / (VERTEBRA_RY * s)) ** 2) <= 1.0
    core = ((cx / (VERTEBRA_RX * s - cortex)) ** 2 + ((cy - VERTEBRA_Y * s) / (VERTEBRA_RY * s - cortex)) ** 2) <= 1.0
    canal_y = (VERTEBRA_Y + VERTEBRA_RY + 8.5) * s
    rc = np.sqrt(cx**2 + (cy - canal_y) ** 2)
    canal = rc < 8.5 * s
    arch = (rc >= 8.5 * s) & (rc < 14.0 * s) & (cy > canal_y - 6 * s)
    spinous = (np.abs(cx) < 3.5 * s) & (cy > canal_y + 8 * s) & (cy < 100 * s)
    spinous_core = (np.abs(cx) < 1.8 * s) & (cy > canal_y + 10 * s) & (cy < 98 * s)
    # Transverse processes: capsules from the pedicles toward the rib necks.
    transverse = np.zeros_like(canal)
    for side in (-1.0, 1.0):
        ax, ay, bx, by = side * 10 * s, canal_y - 2 * s, side * 32 * s, canal_y + 4 * s
        vx, vy = bx - ax, by - ay
        t = np.clip(((cx - ax) * vx + (cy - ay) * vy) / (vx * vx + vy * vy), 0, 1)
        transverse |= np.hypot(cx - ax - t * vx, cy - ay - t * vy) < 5.0 * s

    period = 25.0 * frame.scale_z
    z = frame.axis_mm(0)
    z_t1 = frame.w_to_mm(T1_W) + 0.4 * period
    for k in range(tissue.shape[0]):
        phase = ((z_t1 - z[k]) / period) % 1.0
        sl = tissue[k][box[1], box[2]]
        sl[canal] = T.CORD
        if phase < 0.18:
            sl[body] = T.DISC
            continue
        endplate = phase < 0.18 + 1.5 / period or phase > 1.0 - 1.0 / period
        sl[body] = T.CORTICAL
        if not endplate:
            sl[core] = T.TRABECULAR
        if 0.25 < phase < 0.9:
            sl[arch | spinous] = T.CORTICAL
            sl[spinous_core] = T.TRABECULAR
        if 0.3 < phase < 0.65:
            sl[transverse] = T.CORTICAL


def _cavity_ray(frame: Frame, phi: float, side: float, z_mm: float) -> float:
    """Distance from the body axis to the cavity contour along the axial direction ``phi`` (0 = posterior)
    at height ``z_mm``."""
    dx, dy = side * np.sin(phi), np.cos(phi)
    w = z_mm / ((frame.shape[0] - 1) * frame.spacing[0]) + 0.5
    fa, fb = cavity_taper(w)
    r = float(_cavity_radius(np.float64(dx * 100.0), np.float64(dy * 100.0), frame.scale, fa, fb))
    return 100.0 / r


def _paint_ribs(tissue: np.ndarray, frame: Frame) -> None:
    """Twelve pairs of ribs: from the transverse processes around the cavity, descending anteriorly, with
    costal cartilage joining the upper seven to the sternum; oval (taller than wide) cross-sections."""
    s = frame.scale
    period = 25.0 * frame.scale_z
    min_r = 0.6 * min(frame.spacing[1:])
    radius = max(4.5 * s, min_r)
    metric = (1.0 / 1.5, 1.0, 1.0)
    z_t1 = frame.w_to_mm(T1_W)
    for k in range(12):
        z0 = z_t1 - k * period
        phi_end = np.radians(150 if k < 7 else (135 if k < 10 else 105))
        cartilage_from = 0.8 if k < 10 else 2.0
        drop = period * (1.5 if k == 0 else 3.6)
        for side in (-1.0, 1.0):
            phis = np.linspace(np.radians(22), phi_end, 16)
            pts = [np.array([z0 + 0.2 * period, 72 * s, side * 30 * s])]
            for i, phi in enumerate(phis):
                t = i / (len(phis) - 1)
                z = z0 - drop * t**1.15 + 0.25 * period * np.sin(np.pi * t) * (1 - t)
                rho = _cavity_ray(frame, phi, side, z) + 7.0 * s
                pts.append(np.array([z, rho * np.cos(phi), side * rho * np.sin(phi)]))
            n_bone = round(cartilage_from * len(pts))
            bone, cart = pts[: max(n_bone, 2)], pts[max(n_bone, 2) - 1 :]
            radii = [radius] * len(bone)
            paint_tube(tissue, frame, bone, radii, T.CORTICAL, keep=(T.TRABECULAR,), metric=metric)
            paint_tube(tissue, frame, bone, radii, T.TRABECULAR, metric=metric, inset=min(1.2, 0.5 * radius))
            if len(cart) >= 2:
                paint_tube(
                    tissue,
                    frame,
                    cart,
                    [radius * 0.9] * len(cart),
                    T.CARTILAGE,
                    keep=(T.CORTICAL, T.TRABECULAR),
                    metric=metric,
                )


def _paint_sternum(tissue: np.ndarray, frame: Frame) -> None:
    s = frame.scale
    y = frame.axis_mm(1)[:, None]
    x = frame.axis_mm(2)[None, :]
    w = frame.w[:, 0, 0]
    yc = -(CAVITY_B_ANT + 7.0) * s
    for k in np.nonzero((w > 0.42) & (w < 0.88))[0]:
        manubrium = w[k] > 0.78
        rx, ry = (24 * s, 8 * s) if manubrium else (15 * s, 6 * s)
        outer = (x / rx) ** 2 + ((y - yc) / ry) ** 2 <= 1
        inner = (x / max(rx - 1.2, 0.5)) ** 2 + ((y - yc) / max(ry - 1.2, 0.5)) ** 2 <= 1
        sl = tissue[k]
        sl[outer] = T.CORTICAL
        sl[inner] = T.TRABECULAR


def build_anatomy(frame: Frame) -> Anatomy:
    """Tissue classes of the whole volume; deterministic (the randomness lives in trees and nodules)."""
    s = frame.scale
    nz, ny, nx = frame.shape
    tissue = np.broadcast_to(_body_wall(frame), frame.shape).copy()
    cavity = _cavity(frame)
    tissue[cavity] = T.MEDIASTINAL_FAT
    w = frame.w
    x = frame.x
    y = frame.y

    # Lungs: the cavity above the diaphragm, outside the mediastinum, inside the apical domes.
    above = w > _diaphragm_w(frame)[None]
    # Mediastinal half-width: widest around the trachea and great vessels, narrow at the anterior junction;
    # the vessels, heart and airways painted later carve the rest of the mediastinal contour.
    hump = np.exp(-(((w - 0.70) / 0.12) ** 2))
    central = np.exp(-(((y - 5.0 * s) / (35.0 * s)) ** 2))
    mediastinum = np.abs(x - MEDIAN_X * s) < (5.0 + (8.0 + 8.0 * hump) * central) * s
    region = cavity & above & ~mediastinum
    lungs = {}
    for name, side in (("right", -1.0), ("left", 1.0)):
        lung = region & ((x - MEDIAN_X * s) * side > 0)
        apex_c = np.sqrt(np.clip(1.0 - ((w - APEX_START_W) / (APEX_W - APEX_START_W)) ** 2, 0, 1))
        apex_c = np.where(w < APEX_START_W, 10.0, apex_c)  # no limit below the apical dome
        k0 = int(np.searchsorted(w[:, 0, 0], APEX_START_W))
        c = apex_c[k0:]
        dome = ((x - side * 62 * s) / (72 * s * c + 1e-6)) ** 2 + ((y - 15 * s) / (80 * s * c + 1e-6)) ** 2 <= 1
        lung[k0:] &= dome
        lungs[name] = lung
    tissue[lungs["left"] | lungs["right"]] = T.LUNG

    # Abdomen below the diaphragm: liver on the right, stomach and spleen on the left with a gas bubble.
    below = cavity & ~above
    tissue[below & (x < 15 * s)] = T.LIVER
    tissue[below & (x >= 15 * s)] = T.ABDOMEN
    bubble_c = frame.point(48, -28, 0.21)
    box, mask = _ellipsoid(frame, bubble_c, (12 * frame.scale_z, 18 * s, 24 * s))
    sub = tissue[box]
    sub[mask & (sub == T.ABDOMEN)] = T.BOWEL_GAS

    # Heart in its pericardial fat, resting on the diaphragm, long axis toward the left, anterior, inferior.
    centre = frame.point(30, -20, 0.37)
    rz = 0.13 * frame.height_mm
    for code, grow in ((T.MEDIASTINAL_FAT, 5.0), (T.HEART, 0.0)):
        box, mask = _ellipsoid(
            frame,
            centre,
            (rz + grow, (50 + grow) * s, (74 + grow) * s),
            np.radians(-35),
            shear=-0.5 * s / frame.scale_z,
        )
        sub = tissue[box]
        sub[mask & np.isin(sub, (T.LUNG, T.MEDIASTINAL_FAT, T.LIVER, T.ABDOMEN))] = code

    # Great vessels, oesophagus, trachea and main bronchi.
    soft = (T.LUNG, T.MEDIASTINAL_FAT, T.HEART, T.MUSCLE)
    for pts, radii in GREAT_VESSELS.values():
        paint_tube(tissue, frame, polyline(frame, pts), [r * s for r in radii], T.BLOOD, only=soft)
    pts, radii = ESOPHAGUS
    paint_tube(
        tissue, frame, polyline(frame, pts), [r * s for r in radii], T.ESOPHAGUS, only=(*soft, T.LIVER, T.ABDOMEN)
    )
    airway_wall = max(1.2, 2.0 * s)
    for pts, radii in (TRACHEA, *MAIN_BRONCHI.values()):
        p = polyline(frame, pts)
        r = [v * s for v in radii]
        paint_tube(tissue, frame, p, r, T.AIRWAY_WALL, keep=(T.AIRWAY_LUMEN,), only=(*soft, T.BLOOD))
        paint_tube(tissue, frame, p, r, T.AIRWAY_LUMEN, inset=airway_wall)

    _paint_spine(tissue, frame)
    _paint_ribs(tissue, frame)
    _paint_sternum(tissue, frame)

    # What the heart, vessels, airways and bones took is no longer lung.
    for name in lungs:
        lungs[name] &= tissue == T.LUNG
    anatomy = Anatomy(tissue=tissue, lungs=lungs)
    for name in ("right", "left"):
        art = GREAT_VESSELS[f"{name}_pulmonary_artery"]
        vein = GREAT_VESSELS[f"{name}_pulmonary_vein"]
        bronchus = MAIN_BRONCHI[name]
        anatomy.tree_roots[name] = [
            ("artery", frame.point(*art[0][-1]), art[1][-1] * s),
            ("vein", frame.point(*vein[0][0]), vein[1][0] * s),
            ("airway", frame.point(*bronchus[0][-1]), bronchus[1][-1] * s),
        ]
    assert tissue.dtype == np.uint8 and tissue.shape == (nz, ny, nx)
    return anatomy
