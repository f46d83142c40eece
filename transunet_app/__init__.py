"""TransUNet App: 2D-transformer organ segmentation of CT."""

__version__ = "0.1.0"
