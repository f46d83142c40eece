"""Data: image I/O with geometry, orientation, label maps, dataset preparation and loading.

Modules: ``io`` (read NIfTI/DICOM/NRRD/MHA, atomic NIfTI writes), ``geometry`` (the canonical
slice frame), ``labels`` (class sets, label maps, splits), ``synapse`` (prepare BTCV and the
official preprocessed layout), ``folders`` (imagesTr/labelsTr folders), ``phantom`` (synthetic
CT), ``datasets`` (torch datasets over the prepared layout). Import the submodules directly;
this package imports nothing heavy.
"""
