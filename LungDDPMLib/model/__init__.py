"""The denoiser network: a 3D UNet in the guided-diffusion layout, compatible with the published weights."""

from .unet import UNet3D, count_parameters

__all__ = ["UNet3D", "count_parameters"]
