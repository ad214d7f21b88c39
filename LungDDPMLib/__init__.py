"""LungDDPM engine: Lung-DDPM-compatible conditional 3D diffusion with anatomically aware sampling.

Pure Python (torch, numpy, SimpleITK, scikit-image); never imports ``slicer`` or ``qt``.
"""

__version__ = "0.1.0"
