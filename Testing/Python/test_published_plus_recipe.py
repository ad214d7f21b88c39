"""``--recipe published`` for Lung-DDPM+ against the authors' ``sample.py`` and ``dpm_solver.py``, written out here.

The oracle below restates Manem-Lab/Lung-DDPM-PLUS (``sample.py`` 3D task; ``diffusion_model/trainer.py``
``p_sample_loop_dpm_solver``; ``diffusion_model/dpm_solver.py`` ``NoiseScheduleVP('discrete')``, ``model_wrapper``,
``DPM_Solver.sample`` / ``inverse`` with ``dpmsolver++``, multistep, order 3, 50 time-uniform steps, dynamic
thresholding) in their order of operations, with nibabel reading the files as there. It shares two things with
the code it checks, by convention: the network (a narrow UNet in the Lung-DDPM+ key layout with seeded weights)
and the randomness (the nodule voxel index from ``numpy.random.default_rng(seed)``, the initial noise from
``torch.Generator().manual_seed(seed)``); it calls nothing else of the project. ``MinMaxScaler`` is written out (its
fit/transform/inverse arithmetic) because scikit-learn is not installed here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Tuple

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungDDPMLib.config import preset
from LungDDPMLib.data.io import read_ct
from LungDDPMLib.data.layout import load_layout
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import InputError
from LungDDPMLib.synthesis import synthesize_case

CUBE = 16  # the released model's is 64 (its grid); the rule is the same, and 16^3 keeps 200 network calls fast
N_TIMESTEPS = 250


def plus_model(cube: int = CUBE) -> DiffusionModel:
    """The Lung-DDPM+ architecture (levels, attention, nodule-only input) at width 4, every weight seeded."""
    torch.manual_seed(7)
    base = preset("lung-ddpm-plus")
    model = DiffusionModel(
        preset("lung-ddpm-plus", grid=(cube,) * 3, unet=dataclasses.replace(base.unet, model_channels=4))
    )
    with torch.no_grad():
        for p in model.denoise_fn.parameters():
            p.normal_(0.0, 0.2 if p.dim() > 1 else 0.05)  # the zero-initialised output conv too
    return model.eval()


# ------------------------------------------------------------------------------- the authors' solver, restated
def their_cosine_betas(timesteps: int, s: float = 0.008) -> np.ndarray:
    steps = timesteps + 1
    x = np.linspace(0, steps, steps)
    ac = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    ac = ac / ac[0]
    return np.clip(1 - (ac[1:] / ac[:-1]), a_min=0, a_max=0.999)


def their_interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """dpm_solver.interpolate_fn: place x among the keypoints by sorting, take the segment around it."""
    n, k = x.shape[0], xp.shape[1]
    all_x = torch.cat([x.unsqueeze(2), xp.unsqueeze(0).repeat((n, 1, 1))], dim=2)
    sorted_x, idx = torch.sort(all_x, dim=2)
    x_idx = torch.argmin(idx, dim=2)
    cand = x_idx - 1
    one, last = torch.tensor(1), torch.tensor(k - 2)
    start = torch.where(x_idx == 0, one, torch.where(x_idx == k, last, cand))
    end = torch.where(start == cand, start + 2, start + 1)
    sx = torch.gather(sorted_x, 2, start.unsqueeze(2)).squeeze(2)
    ex = torch.gather(sorted_x, 2, end.unsqueeze(2)).squeeze(2)
    start2 = torch.where(x_idx == 0, torch.tensor(0), torch.where(x_idx == k, last, cand))
    ys = yp.unsqueeze(0).expand(n, -1, -1)
    sy = torch.gather(ys, 2, start2.unsqueeze(2)).squeeze(2)
    ey = torch.gather(ys, 2, (start2 + 1).unsqueeze(2)).squeeze(2)
    return sy + (x - sx) * (ey - sy) / (ex - sx)


class TheirSolver:
    """NoiseScheduleVP('discrete') + model_wrapper(model_type='noise') + DPM_Solver('dpmsolver++', thresholding)."""

    def __init__(self, net, condition: torch.Tensor, calls: List[float]) -> None:
        betas = torch.from_numpy(their_cosine_betas(N_TIMESTEPS))
        log_alphas = 0.5 * torch.log(1 - betas).cumsum(dim=0)
        self.total_n = len(log_alphas)
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:].reshape((1, -1)).to(torch.float32)
        self.log_alpha_array = log_alphas.reshape((1, -1)).to(torch.float32)
        self.net, self.condition, self.calls = net, condition, calls

    def lmc(self, t):
        return their_interpolate(t.reshape((-1, 1)), self.t_array, self.log_alpha_array).reshape(-1)

    def alpha(self, t):
        return torch.exp(self.lmc(t))

    def std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.lmc(t)))

    def lam(self, t):
        m = self.lmc(t)
        return m - 0.5 * torch.log(1.0 - torch.exp(2.0 * m))

    def model_fn(self, x, t):  # data_prediction_fn
        inp = torch.cat([x, self.condition], dim=1).to(dtype=torch.float)
        t_input = (t.expand(inp.shape[0]) - 1.0 / self.total_n) * 1000.0
        self.calls.append(float(t_input[0]))
        noise = self.net(inp, t_input)
        x0 = (x - self.std(t) * noise[:, 0:1, :, :]) / self.alpha(t)
        s = torch.quantile(torch.abs(x0).reshape((x0.shape[0], -1)), 0.995, dim=1)
        s = torch.maximum(s, 1.0 * torch.ones_like(s)).item()
        return torch.clamp(x0, -s, s) / s

    def update(self, x, mlist, tlist, t, order):
        lam_t, a_t, sig_t = self.lam(t), torch.exp(self.lmc(t)), self.std(t)
        if order == 1:
            h = lam_t - self.lam(tlist[-1])
            return sig_t / self.std(tlist[-1]) * x - a_t * torch.expm1(-h) * mlist[-1]
        if order == 2:
            m1, m0 = mlist[-2], mlist[-1]
            l1, l0 = self.lam(tlist[-2]), self.lam(tlist[-1])
            h0, h = l0 - l1, lam_t - l0
            d10 = (1.0 / (h0 / h)) * (m0 - m1)
            phi1 = torch.expm1(-h)
            return (sig_t / self.std(tlist[-1])) * x - (a_t * phi1) * m0 - 0.5 * (a_t * phi1) * d10
        m2, m1, m0 = mlist
        t2, t1, t0 = tlist
        l2, l1, l0 = self.lam(t2), self.lam(t1), self.lam(t0)
        h1, h0, h = l1 - l2, l0 - l1, lam_t - l0
        r0, r1 = h0 / h, h1 / h
        d10 = (1.0 / r0) * (m0 - m1)
        d11 = (1.0 / r1) * (m1 - m2)
        d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11)
        d2 = (1.0 / (r0 + r1)) * (d10 - d11)
        phi1 = torch.expm1(-h)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        return (sig_t / self.std(t0)) * x - (a_t * phi1) * m0 + (a_t * phi2) * d1 - (a_t * phi3) * d2

    def run(self, x, t_T: float, t_0: float, steps: int = 50, order: int = 3):
        timesteps = torch.linspace(t_T, t_0, steps + 1)
        tlist, mlist = [timesteps[0]], [self.model_fn(x, timesteps[0])]
        for step in range(1, order):
            t = timesteps[step]
            x = self.update(x, mlist, tlist, t, step)
            tlist.append(t)
            mlist.append(self.model_fn(x, t))
        for step in range(order, steps + 1):
            t = timesteps[step]
            x = self.update(x, mlist, tlist, t, min(order, steps + 1 - step) if steps < 10 else order)
            for i in range(order - 1):
                tlist[i], mlist[i] = tlist[i + 1], mlist[i + 1]
            tlist[-1] = t
            if step < steps:
                mlist[-1] = self.model_fn(x, t)
        return x

    def sample(self, img, x_start):
        x_noisy = self.run(x_start.to(dtype=torch.float), 1.0 / self.total_n, 1.0)  # inverse()
        x = torch.where(self.condition == -1.0, x_noisy, img)
        return self.run(x, 1.0, 1.0 / self.total_n)


# ----------------------------------------------------------------------------- the authors' sample.py, restated
def their_sample_py(ct_path: Path, mask_path: Path, net, seed: int, calls: List[float]) -> np.ndarray:
    """sample.py, --task 3D, with the bbox the whole volume; returns the saved NIfTI array (i, j, k)."""
    ct_arr = np.transpose(nib.load(str(ct_path)).get_fdata(), (1, 2, 0))
    ref = np.transpose(nib.load(str(mask_path)).get_fdata(), (1, 2, 0))
    target_img_0 = np.array(ct_arr)
    input_img_0 = np.array(ref)
    input_img_0[input_img_0 == 1] = 0
    input_img_0[input_img_0 == 2] = 1
    # crop_nodule_centered_cube (np.random.choice replaced by the seeded generator: the shared convention)
    coords = np.argwhere(input_img_0 == 1)
    sel = coords[np.random.default_rng(seed).choice(len(coords))]
    w, h, d = target_img_0.shape
    half = CUBE // 2
    sw, sh, sd = (max(0, min(n - CUBE, v - half)) for n, v in zip((w, h, d), sel))
    target_img_1 = target_img_0[sw : sw + CUBE, sh : sh + CUBE, sd : sd + CUBE]
    input_img_1 = input_img_0[sw : sw + CUBE, sh : sh + CUBE, sd : sd + CUBE]
    # MinMaxScaler().fit(X) then transform(X), X = reshape(-1, last)
    cols = target_img_1.reshape(-1, target_img_1.shape[-1])
    data_min, data_max = np.nanmin(cols, axis=0), np.nanmax(cols, axis=0)
    data_range = data_max - data_min
    data_range[data_range < 10 * np.finfo(data_range.dtype).eps] = 1.0
    scale_ = 1.0 / data_range
    min_ = 0.0 - data_min * scale_
    target_img_1 = (cols * scale_ + min_).reshape(target_img_1.shape)
    mask = np.zeros((*input_img_1.shape, 1))
    mask[input_img_1 == 1, 0] = 1
    input_tensor = torch.tensor(mask).float() * 2 - 1
    input_tensor = input_tensor.permute(3, 0, 1, 2).unsqueeze(0).transpose(4, 2)
    ct_tensor = (torch.tensor(target_img_1).float() * 2 - 1).unsqueeze(0).transpose(3, 1)
    img = torch.randn((1, 1, CUBE, CUBE, CUBE), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = TheirSolver(net, input_tensor, calls).sample(img, ct_tensor.unsqueeze(0))
    sample = out.unsqueeze(1).transpose(5, 3)[0][0].numpy()
    sample = np.squeeze(sample)
    sample = (sample + 1) / 2
    sample = ((sample.reshape(-1, sample.shape[-1]) - min_) / scale_).reshape(sample.shape)
    result = np.copy(target_img_0)
    result[sw : sw + CUBE, sh : sh + CUBE, sd : sd + CUBE] = sample
    return np.transpose(result, (2, 0, 1))


# ------------------------------------------------------------------------------------------------ the cases
def write_case(folder: Path, shape_ijk: Tuple[int, int, int], nodules_ijk) -> Dict[str, Path]:
    rng = np.random.default_rng(sum(shape_ijk))
    i, j, _k = np.meshgrid(*(np.arange(n) for n in shape_ijk), indexing="ij")
    ct = (-900 + 300 * i / shape_ijk[0] + 150 * j / shape_ijk[1] + rng.normal(0, 20, shape_ijk)).astype(np.float32)
    ct[:, :, 3] = -600.0  # a constant NIfTI-k plane does not make a constant i column: scaling stays per i
    lay = np.zeros(shape_ijk, np.int16)
    lay[2:-2, 2:-2, 2:-2] = 1
    for lo, hi in nodules_ijk:
        lay[tuple(slice(a, b) for a, b in zip(lo, hi))] = 2
        ct[tuple(slice(a, b) for a, b in zip(lo, hi))] = -250.0
    affine = np.diag([0.7, 0.8, 1.25, 1.0])
    affine[:3, 3] = (-30.0, 12.0, -200.0)
    paths = {"ct": folder / "ct.nii.gz", "layout": folder / "layout.nii.gz"}
    nib.save(nib.Nifti1Image(ct, affine), str(paths["ct"]))
    nib.save(nib.Nifti1Image(lay, affine), str(paths["layout"]))
    return paths


CASES = {
    # nodule well inside a non-cubic volume: the cube sits around the drawn voxel
    "inside": ((30, 26, 34), [((12, 10, 14), (16, 14, 19))], 3),
    # nodule touching the i = 0 and k = max faces: the cube is clipped inside, away from the voxel's centre
    "edge": ((27, 33, 22), [((0, 20, 18), (4, 24, 22)), ((14, 5, 9), (16, 7, 11))], 11),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_published_recipe_is_the_authors_sample_py(name: str, tmp_path: Path) -> None:
    shape, nodules, seed = CASES[name]
    paths = write_case(tmp_path, shape, nodules)
    model = plus_model()
    seen: List[float] = []
    handle = model.denoise_fn.register_forward_pre_hook(lambda mod, args: seen.append(float(args[1][0])))
    ct = read_ct(paths["ct"])
    result = synthesize_case(ct, load_layout(paths["layout"], ct), model, seeds=[seed], recipe="published")
    handle.remove()
    ours = sitk.GetArrayFromImage(result.images[0]).transpose(2, 1, 0).astype(np.float64)  # -> (i, j, k)
    theirs_calls: List[float] = []
    theirs = their_sample_py(paths["ct"], paths["layout"], model.denoise_fn, seed, theirs_calls)
    assert ours.shape == theirs.shape == shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0)
    # The same network times: the published scale reaches 996 (trained on 0..249); two calls fewer (the authors'
    # discarded final evaluations).
    assert len(seen) == len(theirs_calls) == 100
    np.testing.assert_allclose(seen, theirs_calls, rtol=0, atol=1e-4)
    assert max(seen) == pytest.approx(996.0, abs=1e-3) and min(seen) == pytest.approx(0.0, abs=1e-3)
    # Outside the cube the CT is untouched; inside, the whole cube is the sample (the background not pasted).
    cube = result.recipe["cubes"][0]
    box = tuple(slice(s, s + CUBE) for s in cube["start_ijk"])
    real = nib.load(str(paths["ct"])).get_fdata()
    outside = np.ones(shape, bool)
    outside[box] = False
    assert np.array_equal(ours[outside], real[outside])
    assert np.abs(ours[box] - real[box]).mean() > 1.0
    if name == "edge":  # the clipped cube: not centred on the voxel
        assert cube["start_ijk"][0] == 0 and cube["start_ijk"][2] == shape[2] - CUBE


def test_a_seed_always_picks_the_same_voxel_and_other_seeds_others(tmp_path: Path) -> None:
    from LungDDPMLib.data.plus_crop import choose_cube

    lay = np.zeros((20, 24, 30), np.uint8)
    lay[5:12, 6:15, 4:20] = 2
    picks = {choose_cube(lay, 16, np.random.default_rng(s)).voxel_zyx for s in range(6)}
    again = choose_cube(lay, 16, np.random.default_rng(3))
    assert choose_cube(lay, 16, np.random.default_rng(3)) == again and len(picks) > 3
    assert all(lay[v] == 2 for v in picks)


def test_published_recipe_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    paths = write_case(tmp_path, (30, 26, 34), [((12, 10, 14), (16, 14, 19))])
    ct = read_ct(paths["ct"])
    layout = load_layout(paths["layout"], ct)
    with pytest.raises(InputError, match="needs at least 40"):
        synthesize_case(ct, layout, plus_model(40), recipe="published")
    with pytest.raises(InputError, match="neither"):
        synthesize_case(ct, layout, DiffusionModel(preset("tiny", grid=(16, 16, 16))), recipe="published")
    with pytest.raises(InputError, match="unknown recipe"):
        synthesize_case(ct, layout, plus_model(), recipe="theirs")


def test_a_worker_job_runs_the_published_recipe_and_records_it(tmp_path: Path) -> None:
    """The JSON job the Slicer module and the CLI batch use: recipe, cube and steps land in the provenance."""
    from LungDDPMLib.checkpoint import save_checkpoint
    from LungDDPMLib.worker import Job, run_job

    paths = write_case(tmp_path, (30, 26, 34), [((12, 10, 14), (16, 14, 19))])
    model = plus_model()
    save_checkpoint(tmp_path / "plus.pt", model, ema=model)
    job = Job.from_dict(
        {
            "cases": [
                {
                    "name": "c",
                    "ct": str(paths["ct"]),
                    "layout": str(paths["layout"]),
                    "out_prefix": str(tmp_path / "out"),
                }
            ],
            "checkpoint": str(tmp_path / "plus.pt"),
            "recipe": "published",
            "seed": 3,
        }
    )
    events: List[dict] = []
    assert run_job(job, events.append) == 0
    result = next(e for e in events if e["type"] == "result")
    prov = result["provenance"]
    assert prov["recipe"]["name"] == "published" and prov["recipe"]["family"] == "lung-ddpm-plus"
    assert prov["recipe"]["network_calls_per_sample"] == 100 and prov["preprocess"] is None
    assert prov["recipe"]["cubes"][0]["seed"] == 3
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["step"] == progress[-1]["total"] == 100
    written = sitk.ReadImage(result["paths"][0])
    ours = sitk.GetArrayFromImage(written).transpose(2, 1, 0)
    theirs = their_sample_py(paths["ct"], paths["layout"], model.denoise_fn, 3, [])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0)
