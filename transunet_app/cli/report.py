"""``transunet report``: a self-contained HTML report for one scan or for a whole evaluation."""
from __future__ import annotations

HELP = "write a clinician-readable HTML report for one segmented scan or an evaluation"


def add_arguments(parser) -> None:
    parser.description = (
        "Scan report: --image CT.nii.gz --labels LABELS.nii.gz [--reference REF.nii.gz] "
        "-o report.html. Dataset report: --metrics metrics.json -o report.html. One HTML file "
        "with the images embedded, printable to PDF from a browser.")
    src = parser.add_argument_group("input (a scan, or a metrics.json from 'transunet evaluate')")
    src.add_argument("--image", metavar="CT",
                     help="CT scan in Hounsfield units (.nii.gz, or a DICOM series folder)")
    src.add_argument("--labels", metavar="LABELS",
                     help="label map of that scan (organ names from its <stem>.json sidecar), or "
                          "a DICOM SEG of the series given as --image")
    src.add_argument("--reference", metavar="REF",
                     help="optional reference label map of the scan: adds Dice and HD95")
    src.add_argument("--metrics", metavar="JSON", help="metrics.json written by 'transunet evaluate'")
    parser.add_argument("-o", "--output", required=True, metavar="report.html", help="HTML file to write")
    parser.add_argument("--label-names", metavar="YAML",
                        help="label id -> organ name, used when the label map has no sidecar")
    prov = parser.add_argument_group("provenance shown in the report")
    prov.add_argument("--model", help="model name")
    prov.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (its SHA-256 is shown)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(args) -> int:
    from pathlib import Path

    from ..errors import UserError

    scan_mode = args.image is not None or args.labels is not None
    if scan_mode and args.metrics:
        raise UserError("--metrics cannot be combined with --image/--labels: one report at a time")
    if not scan_mode and not args.metrics:
        raise UserError("give --image and --labels (scan report) or --metrics (dataset report)")
    if scan_mode and (args.image is None or args.labels is None):
        raise UserError("a scan report needs both --image and --labels")
    if args.reference and not scan_mode:
        raise UserError("--reference belongs to a scan report (--image/--labels)")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    provenance = {"model": args.model}
    if args.checkpoint:
        ck = Path(args.checkpoint)
        if not ck.is_file():
            raise UserError(f"--checkpoint {ck}: no such file")
        provenance.update(checkpoint=str(ck), checkpoint_sha256=sha256_file(ck))

    if scan_mode and (Path(args.image).is_dir() or str(args.labels).lower().endswith(".dcm")):
        result = _dicom_scan_report(args, out, provenance)
    elif scan_mode:
        from ..report.scan import write_scan_report

        result = write_scan_report(args.image, args.labels, out, args.reference, provenance,
                                   labels_yaml=args.label_names, overwrite=args.overwrite)
    else:
        from ..report.dataset import write_dataset_report

        result = write_dataset_report(args.metrics, out, provenance, overwrite=args.overwrite)
    n_alert = sum(f["severity"] == "alert" for f in result["flags"])
    n_warn = sum(f["severity"] == "warning" for f in result["flags"])
    print(f"wrote {out} ({n_alert} alert(s), {n_warn} warning(s))")
    return 0


def _dicom_scan_report(args, out, provenance) -> dict:
    """Scan report of a DICOM series (``--image`` folder) and its SEG or NIfTI labels: both are
    converted to temporary NIfTI files next to the report (removed afterwards)."""
    import tempfile
    from pathlib import Path

    from ..data.io import read_image, write_nifti
    from ..errors import UserError
    from ..report.scan import write_scan_report

    image_path, labels_path = Path(args.image), Path(args.labels)
    if not labels_path.is_file():
        raise UserError(f"label map {labels_path}: no such file")
    image = read_image(image_path)
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output folder does not exist")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".report_") as tmp:
        ct = Path(tmp) / f"source-{image_path.name or 'series'}.nii.gz"  # never labels.nii.gz
        if image_path.is_dir():
            write_nifti(ct, image.array, like=image)
        else:
            ct = image_path
        labels = labels_path
        if labels_path.name.lower().endswith(".dcm"):
            from ..outputs.dicom_seg import seg_as_label_map, seg_provenance

            labels = seg_as_label_map(labels_path, image, Path(tmp) / "labels.nii.gz")
            for key, value in seg_provenance(labels_path).items():
                if key != "software_version" and not provenance.get(key):
                    provenance[key] = value
            if args.label_names is None:
                provenance["label_names_source"] = f"{labels_path} (segment labels)"
        provenance["ct_source"] = str(image_path)
        provenance["labels_source"] = str(labels_path)
        return write_scan_report(ct, labels, out, args.reference, provenance,
                                 labels_yaml=args.label_names, overwrite=args.overwrite)
