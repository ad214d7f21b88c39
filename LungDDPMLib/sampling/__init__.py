"""Reverse diffusion: samplers as short functions over one denoiser, Anatomically Aware Sampling, and the API."""

from .aas import AASBlender, AASConfig, seam_weights
from .api import SamplerConfig, StepInfo, sample
from .eta import EtaEstimator
from .runtime import COMPILE_MODES, RuntimeOptions, prepared_denoiser
from .samplers import SAMPLERS, make_timesteps, sample_ddim, sample_ddpm, sample_dpmpp_2m

__all__ = [
    "COMPILE_MODES",
    "SAMPLERS",
    "AASBlender",
    "AASConfig",
    "EtaEstimator",
    "RuntimeOptions",
    "SamplerConfig",
    "StepInfo",
    "make_timesteps",
    "prepared_denoiser",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "seam_weights",
]
