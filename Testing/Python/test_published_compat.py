"""The published Lung-DDPM pipeline, written out here independently, against what this project feeds the network.

The oracle below follows the authors' public code (Manem-Lab/Lung-DDPM: ``dataset.py``, ``train.py``,
``sample.py``, ``diffusion_model/trainer.py``) step by step, with the tools it used replaced by equivalents that
need no extra install: nibabel reads the files (as there), ``MinMaxScaler().fit_transform(a.reshape(-1, last))``
becomes a per-column min-max, and ``torchio.Resize`` (a SimpleITK linear resample whose output voxel centres sit
at ``(o + 0.5) * n_in / n_out - 0.5`` input voxels, edge voxels repeated) becomes ``F.interpolate(trilinear,
align_corners=False)``, which places samples the same way. Nothing in the oracle calls project code: the files
are written with nibabel in NIfTI voxel order, so a transposed volume anywhere in the project fails here.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Tuple

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from LungDDPMLib.config import preset
from LungDDPMLib.data.datasets import PairedFolderDataset, model_data_options
from LungDDPMLib.data.io import read_ct
from LungDDPMLib.data.layout import load_layout
from LungDDPMLib.data.pipeline import model_options, preprocess
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import InputError
from LungDDPMLib.sampling import SamplerConfig
from LungDDPMLib.sampling.aas import AASBlender
from LungDDPMLib.synthesis import synthesize_case

SIZE = 128  # the published --input_size and --depth_size

#: float32 unit roundoff: rounding to nearest moves a value v by at most U32 |v|.
U32 = float(np.finfo(np.float32).eps) / 2
#: Layout channels: both sides resample the 0/1 masks in float64 (SimpleITK here, trilinear in the oracle; the two
#: agree far below float32 resolution), round to float32 and compute ``* 2 - 1`` in float32. Where a value lies
#: next to a rounding boundary the two land on neighbours at most one step (U32, the values being <= 1) apart,
#: which ``* 2`` doubles; the ``- 1`` is then exact or rounds both alike.
CHANNEL_TOL = 2 * U32
#: CT, scale then resize: here the float32 scaled slice (cast: U32), ``* 2 - 1`` (U32) and the float32 result of the
#: float64 resampling (U32); in the oracle the float32 cast of the resized value, doubled (2 U32), and ``- 1`` (U32).
SCALE_THEN_RESIZE_TOL = 7 * U32


# ------------------------------------------------------------------------------------------ the test volumes
def marked_volumes(shape_ijk: Tuple[int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """A CT (HU) and a 0/1/2 layout in NIfTI voxel order (i, j, k) with markers that tell every axis apart:
    a cube near the origin, a bar along i, a plate spanning j and k, each at a different corner, and a lung box
    and nodule placed off-centre."""
    ni, nj, nk = shape_ijk
    i, j, k = np.meshgrid(np.arange(ni), np.arange(nj), np.arange(nk), indexing="ij")
    rng = np.random.default_rng(sum(shape_ijk))
    ct = -900.0 + 250.0 * i / ni + 120.0 * j / nj + 60.0 * k / nk + rng.normal(0.0, 15.0, shape_ijk)

    def box(fi: Tuple[float, float], fj: Tuple[float, float], fk: Tuple[float, float]) -> np.ndarray:
        return (
            (i >= int(fi[0] * ni))
            & (i < int(fi[1] * ni))
            & (j >= int(fj[0] * nj))
            & (j < int(fj[1] * nj))
            & (k >= int(fk[0] * nk))
            & (k < int(fk[1] * nk))
        )

    ct[box((0.05, 0.14), (0.06, 0.16), (0.05, 0.17))] = 900.0  # cube at low i, low j, low k
    ct[box((0.35, 0.72), (0.55, 0.61), (0.60, 0.67))] = 400.0  # bar along i at high j, high k (inside the lung)
    ct[box((0.25, 0.30), (0.30, 0.70), (0.20, 0.45))] = -300.0  # plate in j-k at low i (inside the lung)
    ct[box((0.85, 0.95), (0.80, 0.95), (0.02, 0.10))] = 1500.0  # bone block at high i, high j, low k
    layout = np.zeros(shape_ijk, dtype=np.uint8)
    layout[box((0.20, 0.80), (0.15, 0.75), (0.10, 0.85))] = 1
    nodule = (i - 0.62 * ni) ** 2 + (j - 0.40 * nj) ** 2 + (k - 0.30 * nk) ** 2 <= (0.06 * min(shape_ijk)) ** 2
    layout[nodule] = 2
    return ct.astype(np.float32), layout


@pytest.fixture(
    scope="module", params=[(100, 90, 70), (150, 100, 140), (128, 128, 128)], ids=["up", "up-and-down", "native128"]
)
def nifti_case(request, tmp_path_factory) -> Dict[str, object]:
    """The case as a user's NIfTI files (written by nibabel, with a non-trivial affine)."""
    shape = request.param
    folder = tmp_path_factory.mktemp("nifti")
    ct, layout = marked_volumes(shape)
    affine = np.diag([0.7, 0.8, 1.5, 1.0])
    affine[:3, 3] = (-40.0, 25.0, -300.0)
    (folder / "ct").mkdir()
    (folder / "layout").mkdir()
    paths = {"ct": folder / "ct" / "case.nii.gz", "layout": folder / "layout" / "case.nii.gz"}
    nib.save(nib.Nifti1Image(ct, affine), str(paths["ct"]))
    nib.save(nib.Nifti1Image(layout, affine), str(paths["layout"]))
    return {"shape": shape, "folder": folder, **paths}


# -------------------------------------------------------------------------------------- the published oracle
def minmax_last_axis(a: np.ndarray) -> np.ndarray:
    """``MinMaxScaler().fit_transform(a.reshape(-1, a.shape[-1])).reshape(a.shape)`` (a constant column -> 0)."""
    flat = a.reshape(-1, a.shape[-1])
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    scale = np.where(hi - lo == 0, 1.0, hi - lo)
    return ((flat - lo) / scale).reshape(a.shape)


def tio_resize(a: np.ndarray) -> np.ndarray:
    """``tio.Resize((128, 128, 128))`` of a 3D float64 array, as ``resize_img`` calls it (only if needed)."""
    if a.shape == (SIZE, SIZE, SIZE):
        return a
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    return F.interpolate(t, size=(SIZE,) * 3, mode="trilinear", align_corners=False)[0, 0].numpy()


def published_inputs(ct_path: Path, layout_path: Path, script: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(CT (1, D, H, W), condition (2, D, H, W)) as the published code hands them to the network.

    ``script=False``: ``dataset.py`` + ``train.py`` (scale per k at the native grid, then resize);
    ``script=True``: ``sample.py`` (resize, then scale along the last axis of the transposed array).
    """
    ct = nib.load(str(ct_path)).get_fdata()  # (i, j, k), float64
    mask = nib.load(str(layout_path)).get_fdata()
    if script:
        ct = tio_resize(np.transpose(ct, (1, 2, 0)))
        ct = minmax_last_axis(ct)
    else:
        ct = tio_resize(np.transpose(minmax_last_axis(ct), (1, 2, 0)))
    ct_t = (torch.tensor(ct).float() * 2 - 1).unsqueeze(0).transpose(3, 1)  # ct_transform / target_transform
    mask = np.transpose(mask, (1, 2, 0))
    channels = np.zeros((*mask.shape, 2))
    channels[mask == 1, 0] = 1  # label2masks
    channels[mask == 2, 1] = 1
    if mask.shape != (SIZE, SIZE, SIZE):  # resize_img_4d: each channel on its own, linear
        channels = np.stack([tio_resize(channels[..., c]) for c in range(2)], axis=-1)
    cond = (torch.tensor(channels).float() * 2 - 1).permute(3, 0, 1, 2).transpose(3, 1)  # input_transform
    return ct_t, cond


def resize_then_scale_tol(ct_path: Path) -> float:
    """The float32 rounding bound for ``sample.py``'s order: here the HU are resampled to float32 (each resized
    value, and so each slice's minimum and maximum, off by at most U32 max|HU|) before the per-slice min-max, which
    divides by the slice's range R: 4 U32 max|HU| / R on the [0, 1] scale, doubled by ``* 2``; plus the float32
    casts and ``* 2 - 1`` of both sides (6 U32)."""
    hu = tio_resize(np.transpose(nib.load(str(ct_path)).get_fdata(), (1, 2, 0)))
    flat = hu.reshape(-1, hu.shape[-1])  # per NIfTI-i slice, as sample.py scales
    ratio = np.abs(flat).max(axis=0) / (flat.max(axis=0) - flat.min(axis=0))
    return float(8 * U32 * ratio.max() + 6 * U32)


def published_known(cond: torch.Tensor) -> torch.Tensor:
    """``p_sample_loop_lung_ddpm``'s mask: both channels exactly -1."""
    return (cond[0] == -1.0) & (cond[1] == -1.0)


# ------------------------------------------------------------------------------------------------ sampling
class Captured(Exception):
    """Raised by the hook to stop at the first network call."""


def capture_first_network_call(monkeypatch, model: DiffusionModel) -> Dict[str, object]:
    """Record the published network's input and the reference/known mask AAS gets, then stop before computing."""
    seen: Dict[str, object] = {}
    import LungDDPMLib.synthesis as synthesis

    real_sample = synthesis.sample
    real_blender_init = AASBlender.__init__

    def blender_spy(self, schedule, reference, known, config, noise):
        seen["aas_known"] = known.detach().clone()
        real_blender_init(self, schedule, reference, known, config, noise)

    monkeypatch.setattr(AASBlender, "__init__", blender_spy)

    def spy(*args, **kwargs):
        seen["layout"], seen["reference"] = args[1], args[2]
        seen["condition"] = kwargs.get("condition")
        return real_sample(*args, **kwargs)

    def stop(module, inputs):
        seen["network_input"] = inputs[0].detach().clone()
        raise Captured

    monkeypatch.setattr(synthesis, "sample", spy)
    seen["handle"] = model.denoise_fn.register_forward_pre_hook(stop)
    return seen


@pytest.fixture(scope="module")
def published_model() -> DiffusionModel:
    torch.manual_seed(0)
    return DiffusionModel(preset("lung-ddpm")).eval()


def test_sampling_feeds_the_network_what_the_published_pipeline_fed_it(nifti_case, published_model, monkeypatch):
    """The default intensity order is the training one (scale per k, then resize): what the weights saw."""
    seen = capture_first_network_call(monkeypatch, published_model)
    ct = read_ct(nifti_case["ct"])
    layout = load_layout(nifti_case["layout"], ct)
    try:
        with pytest.raises(Captured):
            synthesize_case(ct, layout, published_model, sampler=SamplerConfig("ddim", steps=2), precision="fp32")
    finally:
        seen["handle"].remove()
    want_ct, want_cond = published_inputs(nifti_case["ct"], nifti_case["layout"], script=False)
    net_in = seen["network_input"]
    assert tuple(net_in.shape) == (1, 3, SIZE, SIZE, SIZE)
    # The layout channels reach the network as published: linear resize, fractional at boundaries.
    assert torch.allclose(net_in[0, 1:], want_cond, atol=CHANNEL_TOL, rtol=0)
    if nifti_case["shape"] != (SIZE,) * 3:
        fractional = ((want_cond > -1) & (want_cond < 1)).sum()
        assert int(fractional) > 1000, "the resized case must exercise fractional boundary values"
    # The CT handed over for AAS (x_t is noise at the first call) is the published one, per-k scaled.
    reference = torch.as_tensor(np.asarray(seen["reference"]))
    assert torch.allclose(reference, want_ct[0], atol=SCALE_THEN_RESIZE_TOL, rtol=0)
    # AAS keeps exactly the voxels where both channels are -1: the mask the blender was given.
    known_want = published_known(want_cond)
    assert torch.equal(seen["aas_known"][0, 0].cpu(), known_want)
    # The check can fail: the order this project used before (i, j, k) is far from the published tensor.
    wrong = torch.as_tensor(np.asarray(seen["reference"])).permute(0, 2, 1)
    assert float((wrong - want_ct[0]).abs().mean()) > 0.05


def test_resize_then_scale_is_the_published_sampling_script(nifti_case):
    ct = read_ct(nifti_case["ct"])
    layout = load_layout(nifti_case["layout"], ct)
    options = model_options(preset("lung-ddpm"))
    items, record = preprocess(ct, layout, compat_order="resize-then-scale", **options)
    want_ct, want_cond = published_inputs(nifti_case["ct"], nifti_case["layout"], script=True)
    tol = resize_then_scale_tol(nifti_case["ct"])
    assert torch.allclose(torch.from_numpy(items[0].ct), want_ct[0], atol=tol, rtol=0)
    assert torch.allclose(torch.from_numpy(items[0].channels), want_cond, atol=CHANNEL_TOL, rtol=0)
    assert record.patches[0].norm.slice_axis == 2  # NIfTI axis i, recorded so that the inverse uses it too
    # ... and the per-i scaling differs from the training-order scaling (the test distinguishes the two).
    train_ct, _ = published_inputs(nifti_case["ct"], nifti_case["layout"], script=False)
    assert float((train_ct - want_ct).abs().max()) > 0.05


class EchoDenoiser(torch.nn.Module):
    """A 'network' whose x0 prediction is a fixed volume: a sampler then returns that volume, so the way back
    from the network to the user's geometry can be checked with the markers in it."""

    def __init__(self, x0: torch.Tensor, model: DiffusionModel) -> None:
        super().__init__()
        self.register_buffer("x0", x0)
        self.register_buffer("abar", model.schedule.alphas_cumprod.clone())
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the sampler finds the device through the parameters

    def forward(self, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen_x = inp[:, :1].detach().clone()  # x_t, whose size sets the float32 rounding of the answer
        a = self.abar[t].view(-1, 1, 1, 1, 1)
        return (inp[:, :1] - a.sqrt() * self.x0) / (1 - a).sqrt()


def one_step_rounding_bound_hu(echo: EchoDenoiser, real: np.ndarray, t: int) -> np.ndarray:
    """Per voxel (NIfTI order), the most float32 rounding can move the HU of a one-step x0 estimate at level t.

    The echo returns eps = fl(fl(x - fl(sqrt(a) x0)) / s) with s its float32 sqrt(1 - a); the sampler forms
    x0' = fl(fl(x - fl(c eps)) / sqrt(a)) with c = sqrt(1 - a) rounded to float32 (a = alphabar_t). Each fl() moves
    a value y by at most u |y| (u = 2^-24, round to nearest). Three of them act on numbers of the size of x_t
    (x - sqrt(a) x0, the division by s, c eps; the sampler's x - c eps is exact, its operands being within a
    factor 2), and c / s differs from 1 by |1 - c / s|: to first order in u, x0' - x0 is at most
    (3u c / s + |1 - c / s|) (|x_t| + sqrt(a)) / sqrt(a), the amplification 1 / sqrt(alphabar_249) ~ 5000.
    What acts on x0 itself adds at most 8u: the oracle's float32 x0 (cast, * 2, - 1: 3u), the sampler's division
    (2u, as a reciprocal times), the float32 sqrt(a) of the echo (u) and the (x + 1) of the way back (2u). An error
    e in [-1, 1] is e (max_k - min_k) / 2 HU in slice k (the per-k min-max scaling), and the float32 output rounds
    the HU value once more (u |HU|).
    """
    u = float(np.finfo(np.float32).eps) / 2
    a = echo.abar[t]
    s = float((1 - a).sqrt())  # the echo's float32 sqrt(1 - a)
    c = float(np.float32(math.sqrt(1.0 - float(a))))  # the sampler's coefficient, as float32 multiplies it
    sqrt_a = math.sqrt(float(a))
    x_ijk = np.abs(echo.seen_x[0, 0].double().numpy()).transpose(0, 2, 1)  # (D, H, W) is NIfTI (i, k, j)
    norm = (3 * u * c / s + abs(1 - c / s)) * (x_ijk + sqrt_a) / sqrt_a + 8 * u
    half_range_k = (real.max(axis=(0, 1)) - real.min(axis=(0, 1))) / 2
    return norm * half_range_k[None, None, :] + u * np.abs(real)


def test_synthetic_output_returns_to_the_input_geometry_with_the_markers_in_place(nifti_case):
    model = DiffusionModel(preset("lung-ddpm", unet=preset("tiny").unet))  # published data handling, any network
    want_ct, _ = published_inputs(nifti_case["ct"], nifti_case["layout"], script=False)
    model.denoise_fn = EchoDenoiser(want_ct[None], model)
    ct = read_ct(nifti_case["ct"])
    layout = load_layout(nifti_case["layout"], ct)
    result = synthesize_case(ct, layout, model, sampler=SamplerConfig("ddim", steps=1), precision="fp32")
    out = result.images[0]
    assert out.GetSize() == ct.GetSize() and out.GetDirection() == ct.GetDirection()
    assert out.GetOrigin() == ct.GetOrigin() and out.GetSpacing() == ct.GetSpacing()
    # Compare in NIfTI voxel order, independently of SimpleITK's array order.
    real = nib.load(str(nifti_case["ct"])).get_fdata()
    lay = nib.load(str(nifti_case["layout"])).get_fdata()
    syn = np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0)).astype(np.float64)
    inside = lay > 0
    assert np.array_equal(syn[~inside], real[~inside].astype(np.float32))  # outside: the input, bit for bit
    if nifti_case["shape"] == (SIZE,) * 3:
        # No resampling: the same HU back, up to float32 rounding amplified in the one-step x0 estimate, bounded
        # voxel by voxel from this run's x_T (up to about 5 HU; a transposed cube would be off by hundreds).
        bound = one_step_rounding_bound_hu(model.denoise_fn, real, model.schedule.num_timesteps - 1)
        err = np.abs(syn - real)
        assert (err[inside] <= bound[inside]).all(), f"worst: {(err[inside] / bound[inside]).max():.3f} of the bound"
        assert bound[inside].max() < 0.01 * (real.max() - real.min())  # the bound stays far below any marker
    else:  # down to 128^3 and back blurs, but every marker stays where it was
        err = np.abs(syn[inside] - real[inside])
        assert np.median(err) < 30.0
        for value in (400.0, -300.0):  # each marker: centroid and size, thresholded half-way to its surroundings
            marker = inside & (np.abs(real - value) < 1)
            lo, hi = np.argwhere(marker).min(axis=0) - 3, np.argwhere(marker).max(axis=0) + 4
            near = tuple(slice(max(a, 0), b) for a, b in zip(lo, hi))
            level = (value + np.median(real[near][~marker[near]])) / 2
            found = np.zeros_like(marker)
            found[near] = (syn[near] > level) if value > level else (syn[near] < level)
            found &= inside
            assert 0.7 < found.sum() / marker.sum() < 1.3
            assert np.abs(np.argwhere(found).mean(axis=0) - np.argwhere(marker).mean(axis=0)).max() < 0.5


# ------------------------------------------------------------------------------------------------ training
def test_training_batches_have_the_orientation_sampling_feeds(nifti_case):
    cfg = preset("lung-ddpm")
    ds = PairedFolderDataset(
        nifti_case["folder"] / "ct", nifti_case["folder"] / "layout", flip_prob=0.0, **model_data_options(cfg)
    )
    item = ds[0]
    want_ct, want_cond = published_inputs(nifti_case["ct"], nifti_case["layout"], script=False)
    assert torch.allclose(item["ct"], want_ct, atol=SCALE_THEN_RESIZE_TOL, rtol=0)
    assert torch.allclose(item["condition"], want_cond, atol=CHANNEL_TOL, rtol=0)


def test_left_right_flips_stay_left_right_in_the_published_order(nifti_case):
    """Augmentation flips are named on the patient's axes: flipping x (NIfTI i) must flip the network's D."""
    cfg = preset("lung-ddpm")
    options = model_data_options(cfg)
    plain = PairedFolderDataset(nifti_case["folder"] / "ct", nifti_case["folder"] / "layout", flip_prob=0.0, **options)
    flipped = PairedFolderDataset(
        nifti_case["folder"] / "ct", nifti_case["folder"] / "layout", flip_axes=(2,), flip_prob=1.0, **options
    )
    assert torch.equal(flipped[0]["ct"], plain[0]["ct"].flip(1))
    assert torch.equal(flipped[0]["condition"], plain[0]["condition"].flip(1))


def test_trainer_feeds_the_batch_condition_to_the_network(tmp_path):
    """A published-style model trains on the item's linearly resized channels, not on channels re-made from labels."""
    from LungDDPMLib.training import InMemoryPairs, TrainConfig, Trainer

    cfg = preset("lung-ddpm", unet=preset("tiny").unet, grid=(16, 16, 16))
    layout = torch.zeros(16, 16, 16, dtype=torch.long)
    layout[3:12, 4:13, 2:14] = 1
    cond = torch.full((2, 16, 16, 16), -1.0)
    cond[0, 3:12, 4:13, 2:14] = 0.25  # values that labels could never produce

    class WithCondition(InMemoryPairs):
        def __getitem__(self, key):
            return {**super().__getitem__(key), "condition": cond.clone()}

    data = WithCondition(torch.zeros(1, 16, 16, 16), layout[None])
    model = DiffusionModel(cfg)
    seen: List[torch.Tensor] = []
    model.denoise_fn.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    trainer = Trainer(model, data, TrainConfig(max_steps=1, batch_size=1, grad_accum=1), tmp_path / "run")
    trainer.fit()
    assert seen and torch.equal(seen[0][0, 1:], cond)
    plain = InMemoryPairs(torch.zeros(1, 16, 16, 16), layout[None])
    with pytest.raises(InputError, match="linearly resized layout channels"):
        Trainer(DiffusionModel(cfg), plain, TrainConfig(max_steps=1), tmp_path / "run2").fit()


def test_the_trainer_refuses_data_prepared_for_another_orientation(tmp_path):
    from LungDDPMLib.data.datasets import PhantomDataset
    from LungDDPMLib.training import TrainConfig, Trainer

    cfg = preset("lung-ddpm", unet=preset("tiny").unet, grid=(16, 16, 16))
    ours = PhantomDataset(1, phantom_size=(32, 32, 32), phantom_spacing=(6.0, 6.0, 8.0), grid=(16, 16, 16))
    with pytest.raises(InputError, match=r"prepared with .*'kji'.* expects .*'ikj'"):
        Trainer(DiffusionModel(cfg), ours, TrainConfig(max_steps=1), tmp_path / "run")
    plus = preset(
        "lung-ddpm-plus", unet=dataclasses.replace(preset("tiny").unet, layout_channels=("nodule",)), grid=(16, 16, 16)
    )
    assert model_data_options(plus)["spatial_mode"] == "roi"  # roi datasets: nodule patches at native spacing
    with pytest.raises(InputError, match="spatial_mode"):  # a whole-volume dataset for an roi model is refused
        Trainer(DiffusionModel(plus), ours, TrainConfig(max_steps=1), tmp_path / "run3")
