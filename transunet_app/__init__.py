"""TransUNet App: 2D-transformer organ segmentation of CT.

Subpackages: ``models`` (plain models, one encoder family per file, weight formats),
``fast_layers`` and ``kernels`` (fast variants and C kernels, swapped in by passes, never by
``build_model``), ``capabilities`` (what this CPU and torch build can run), ``inference``
(``segment``), ``outputs`` (per-case writers, staged as one unit), ``packages`` (model packages
and exports), ``engine`` (training), ``data`` (the one file layer, geometry, datasets),
``metrics``, ``report``, ``cli``. README.md, "Layout", says where new work goes.
"""

__version__ = "0.1.0"
