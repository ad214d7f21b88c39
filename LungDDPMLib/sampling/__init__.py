"""Reverse diffusion: samplers as short functions over one denoiser, Anatomically Aware Sampling, and the API."""

from .aas import AASBlender, AASConfig, seam_weights
from .api import SamplerConfig, StepInfo, sample
from .samplers import SAMPLERS, make_timesteps, sample_ddim, sample_ddpm, sample_dpmpp_2m

__all__ = [
    "SAMPLERS",
    "AASBlender",
    "AASConfig",
    "SamplerConfig",
    "StepInfo",
    "make_timesteps",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "seam_weights",
]
