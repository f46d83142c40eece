"""Data: the one file layer, orientation, label maps, dataset preparation and loading.

Modules: ``files`` (volume suffixes, case names, pairing, the one atomic write), ``io`` (the
one :class:`~.io.Image` type: read NIfTI/DICOM/NRRD/MHA, read label maps, write NIfTI),
``geometry`` (the canonical slice frame, grid checks, resampling), ``labels`` (class sets from
``datasets/*/labels*.yaml``, label maps, splits, sidecar label names), ``intensity`` (the HU
window shared by preparation and inference), ``layout`` (the official prepared layout and its
writer), ``synapse`` (prepare BTCV), ``folders`` (imagesTr/labelsTr folders), ``phantom``
(synthetic CT), ``datasets`` (torch datasets over the prepared layout). Import the submodules
directly; this package imports nothing heavy.
"""
