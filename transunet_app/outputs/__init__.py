"""Per-case writers of ``segment``'s hospital formats, one module per format.

* :mod:`.dicom_seg`: DICOM Segmentation (SEG, BINARY) referencing the source series; reader too,
* :mod:`.rtstruct`: DICOM RT Structure Set (closed planar contours in patient mm),
* :mod:`.seg_nrrd`: 3D Slicer segmentation (``.seg.nrrd``),
* :mod:`.preview`: axial/coronal/sagittal overlay PNG (the report's figure code),
* :mod:`.organs`: which organs go out (``--roi-subset``), their colours and SNOMED CT codes,
* :mod:`.staging`: all the files of one case written under temporary names and renamed
  together when every one succeeded (:class:`~.staging.OutputSet`), free-space checks.

Every writer writes exactly the path it is given (a temporary name chosen by the caller).
"""
