"""Fidelity harness shared by the test suite and the golden recorders (``tools/golden/``).

* :mod:`.golden`: the golden-file format (official state-dict schema, seeded inputs, float64
  output summaries) and the deterministic official-like tensors both sides use;
* :mod:`.google_npz`: Google ImageNet-21k ViT / R50+ViT ``.npz`` files in the official key schema.

Neither is used by the product's commands; they live in the package (as ``numpy.testing`` and
``torch.testing`` do) so that tests never import ``tools/`` and tools never import ``tests/``.
"""
