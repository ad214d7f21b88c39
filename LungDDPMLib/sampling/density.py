"""Density control: each nodule drawn at the density its class has, with the texture the model gives it.

A diffusion model trained on a few hundred nodules gets the *level* of a class wrong more than its texture: the
second bundled ROI model draws ground glass about 170 HU too dense and part-solid nodules without their solid core
(docs/evaluation.md). A reader judges a nodule first by that level (ground glass -700..-500 HU, a solid part at soft
tissue density), and a user making training data wants to set it, per class or per nodule.

The control acts on the sampler's clean-image estimate ``x0`` at every step. Each nodule has a few smooth *basis
fields* (its interior; for a part-solid nodule a central solid core and the hazy rest) and as many measurement
regions with a target mean. The correction is the combination of basis fields whose region means hit the targets
exactly - the least change of the estimate's levels that does, since it only adds smooth offsets, never touches the
texture (deviations from the mean), the region outside the nodule, or the voxels the sampler keeps from the real CT
(vessels through ground glass). The corrected ``x0`` is turned back into the noise estimate, so every sampler (DDPM,
DDIM, DPM-Solver++) uses it unchanged.

Targets are in HU (:mod:`LungDDPMLib.nodule_density`, whose ``DEFAULT_DENSITY`` holds the class values measured
inside the training phantoms' nodules, ``benchmarks/density_priors.py``); they agree with how the classes look on CT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from ..config import LABEL_OF_TYPE, TYPE_OF_LABEL
from ..diffusion.schedule import NoiseSchedule
from ..nodule_density import NoduleDensity

#: Voxels this deep inside a nodule are its interior: the partial-volume edge is left to the model, as a reader
#: measures a nodule with a region inside it.
INTERIOR_MM = 1.0
#: Width over which a basis field ramps from 0 to 1 (mm): the offsets blend into the model's own edge.
RAMP_MM = 1.0
#: Bisection steps for an offset under clipping: the bracket of 5 units shrinks below 1e-8 (1e-5 HU).
BISECTIONS = 30
#: Fewest interior voxels for a region's mean to be controlled (smaller regions are left to the model).
MIN_REGION_VOXELS = 4


def _ramp(signed_mm: np.ndarray) -> np.ndarray:
    """0 below ``-RAMP_MM/2``, 1 above ``+RAMP_MM/2``, linear between."""
    return np.clip(0.5 + signed_mm / RAMP_MM, 0.0, 1.0).astype(np.float32)


@dataclass
class _Nodule:
    basis: np.ndarray  # (K, D, H, W) float32
    regions: np.ndarray  # (K, D, H, W) bool
    targets: np.ndarray  # (K,) normalised
    spread: np.ndarray  # (K,) largest SD, normalised (NaN: not controlled)
    kind: str = ""
    names: Sequence[str] = ()  # "core" / "interior", one per field


def nodule_fields(
    labels: np.ndarray,
    spacing: Sequence[float],
    drawn: np.ndarray,
    density: Mapping[str, NoduleDensity],
    to_model: Callable[[float], float],
) -> List[_Nodule]:
    """Basis fields, measurement regions and targets of every typed nodule (arrays in ``labels``' axis order).

    ``drawn``: voxels the model draws (the others are kept from the real CT and neither measured nor shifted);
    ``to_model``: HU -> the model's intensity units.
    """
    parts, _ = ndi.label(np.isin(labels, list(TYPE_OF_LABEL)))
    out = []
    for index, box in enumerate(ndi.find_objects(parts), start=1):
        if box is None:
            continue
        pad = [math.ceil((RAMP_MM + 1.0) / s) + 1 for s in spacing]
        big = tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pad, labels.shape))
        mask = parts[big] == index
        kind = TYPE_OF_LABEL[int(np.bincount(labels[big][mask]).argmax())]
        want = density.get(kind)
        if want is None:
            continue
        depth = ndi.distance_transform_edt(mask, sampling=spacing) - ndi.distance_transform_edt(~mask, sampling=spacing)
        # Neither measured nor shifted: what the sampler keeps (a vessel through ground glass) and the voxels next
        # to it, whose partial volume belongs to that vessel, not to the haze.
        mine = drawn[big] & ~ndi.binary_dilation(~drawn[big])
        interior = (depth > INTERIOR_MM) & mine
        fields, regions, targets, names = [], [], [], []
        core = None
        if kind == "part-solid" and want.core_hu is not None:
            radius = (3.0 * mask.sum() * float(np.prod(spacing)) / (4.0 * math.pi)) ** (1.0 / 3.0)
            centre = np.array(ndi.center_of_mass(mask))
            grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in mask.shape], indexing="ij")
            r = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)))
            core = _ramp(want.core_fraction * radius - r) * (depth > 0)
        whole = _ramp(depth - INTERIOR_MM / 2.0) * mine
        if core is not None:
            core = core * mine
            core_region = (core >= 0.999) & interior
            if core_region.sum() >= MIN_REGION_VOXELS:
                fields.append(core)
                regions.append(core_region)
                targets.append(to_model(float(want.core_hu)))
                names.append("core")
            else:
                core = None
        if want.interior_hu is not None:
            rest = whole if core is None else np.clip(whole - core, 0.0, 1.0)
            region = interior & (rest >= 0.999)
            if region.sum() >= MIN_REGION_VOXELS:
                fields.append(rest)
                regions.append(region)
                targets.append(to_model(float(want.interior_hu)))
                names.append("interior")
        if not fields:
            continue
        full = np.zeros((len(fields), *labels.shape), np.float32)
        where = np.zeros((len(fields), *labels.shape), bool)
        full[(slice(None), *big)] = np.stack(fields)
        where[(slice(None), *big)] = np.stack(regions)
        sd = np.nan if want.texture_sd_hu is None else to_model(float(want.texture_sd_hu)) - to_model(0.0)
        spread = np.full(len(fields), sd, np.float64)
        out.append(_Nodule(full, where, np.asarray(targets, np.float64), spread, kind, tuple(names)))
    return out


class DensityControl:
    """Wraps a noise predictor so that every clean-image estimate meets the nodules' target densities."""

    def __init__(self, schedule: NoiseSchedule, nodules: Sequence[_Nodule], device: torch.device) -> None:
        self.host = schedule.host()
        device = torch.device(device)
        # The statistics in float64 where the device has it (MPS has none): sums over thousands of voxels.
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.nodules = []
        self.support: Any = None  # (1, 1, D, H, W) bool: where any basis field acts
        for n in nodules:
            basis = torch.from_numpy(n.basis).to(device)
            regions = torch.from_numpy(n.regions).to(device).flatten(1)
            counts = regions.sum(1).to(self.dtype)
            # a[j, m]: mean over region j of basis field m, the same at every step
            a = (basis.flatten(1)[None] * regions[:, None]).to(self.dtype).sum(-1) / counts[:, None]
            targets, spread = (torch.from_numpy(v).to(self.dtype).to(device) for v in (n.targets, n.spread))
            self.nodules.append((basis, regions.to(self.dtype), counts, a, targets, spread))
            acts = (basis > 0).any(0)[None, None]
            self.support = acts if self.support is None else self.support | acts

    def __bool__(self) -> bool:
        return bool(self.nodules)

    def project(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` (B, 1, D, H, W, within [-1, 1]) plus, per nodule, the basis combination after which each region's
        mean, the image clipped to [-1, 1] as every sampler clips it, equals its target."""
        out = x0
        for basis, regions, counts, a, targets, spread in self.nodules:
            flat = out[:, 0].flatten(1).to(self.dtype)
            means = (flat @ regions.T) / counts  # (B, K)
            if not torch.isnan(spread).all():
                sd = ((flat**2 @ regions.T) / counts - means**2).clamp_min(1e-12).sqrt()
                scale = torch.nan_to_num(spread[None] / sd, nan=1.0).clamp(max=1.0)  # (B, K)
                for k in range(basis.shape[0]):
                    centred = out[:, 0] - means[:, k].float().reshape(-1, 1, 1, 1)
                    out = out + (basis[k] * centred * (scale[:, k].float().reshape(-1, 1, 1, 1) - 1.0))[:, None]
                means = (out[:, 0].flatten(1).to(self.dtype) @ regions.T) / counts
            # Without clipping the offsets solve a K x K system; clipping (a saturated estimate of the noisiest
            # steps) makes each region mean a monotone function of its own offset, solved by bisection in turn.
            coef = torch.linalg.solve(a, (targets[None] - means).T).T  # (B, K)
            shifted = out + torch.einsum("bk,kdhw->bdhw", coef.float(), basis)[:, None]
            if bool((shifted.abs() > 1.0).any()):  # the linear answer is exact unless clipping cuts into it
                coef = self._clipped_solve(out, coef, basis, regions, targets)
                shifted = out + torch.einsum("bk,kdhw->bdhw", coef.float(), basis)[:, None]
            out = shifted.clamp(-1.0, 1.0)
        return out

    @staticmethod
    def _clipped_solve(
        x0: torch.Tensor, coef: torch.Tensor, basis: torch.Tensor, regions: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Offsets with ``mean(clip(x0 + sum_k c_k basis_k))`` over region j equal to target j (Gauss-Seidel over
        the regions, bisection for each: the fields of one nodule barely overlap, so two sweeps settle it)."""
        coef = coef.clone()
        k_count = basis.shape[0]
        flat_basis = basis.flatten(1).to(coef.dtype)
        flat_x = x0[:, 0].flatten(1).to(coef.dtype)
        for _ in range(2 if k_count > 1 else 1):
            for k in range(k_count):
                where = regions[k] > 0
                w = flat_basis[:, where]  # (K, N)
                rest = flat_x[:, where] + coef @ w - coef[:, k : k + 1] * w[k]
                lo = torch.full_like(coef[:, k], -2.5)
                hi = torch.full_like(coef[:, k], 2.5)
                for _ in range(BISECTIONS):
                    mid = (lo + hi) / 2
                    above = (rest + mid[:, None] * w[k]).clamp(-1.0, 1.0).mean(1) > targets[k]
                    hi = torch.where(above, mid, hi)
                    lo = torch.where(above, lo, mid)
                coef[:, k] = (lo + hi) / 2
        return coef

    def wrap(self, eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
        """The same predictor, its noise estimate made consistent with the projected ``x0``."""
        if not self.nodules:
            return eps_fn

        def controlled(x: torch.Tensor, t: torch.Tensor, *args: object) -> torch.Tensor:
            eps = eps_fn(x, t, *args)
            abar = self.host.alpha_bar(int(t[0]))
            x0 = (x - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)
            # Solved on the image's range, which the samplers clip to; outside the nodules the estimate is left as it
            # is, so a sampler that does not clip (a student distilled without clipping) keeps its own there.
            clipped = x0.float().clamp(-1.0, 1.0)
            x0 = torch.where(self.support, self.project(clipped), x0.float())
            return ((x - math.sqrt(abar) * x0) / math.sqrt(1.0 - abar)).to(eps.dtype)

        return controlled


def region_means(
    hu: np.ndarray, labels: np.ndarray, spacing: Sequence[float], drawn: np.ndarray, core_fraction: float = 0.4
) -> List[Dict[str, object]]:
    """Per typed nodule, the mean HU of ``hu`` over the regions the control sets (to measure priors and results)."""
    probe = {k: NoduleDensity(0.0, 0.0 if k == "part-solid" else None, core_fraction) for k in LABEL_OF_TYPE}
    rows = []
    for n in nodule_fields(labels, spacing, drawn, probe, lambda v: v):
        row: Dict[str, object] = {"class": n.kind}
        for name, region in zip(n.names, n.regions):
            row[f"{name}_hu"] = round(float(hu[region].mean()), 1)
            row[f"{name}_sd_hu"] = round(float(hu[region].std()), 1)
        rows.append(row)
    return rows
