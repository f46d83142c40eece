"""One checkpoint, many inputs: read -> check -> segment -> write, for the ``segment`` command.

:class:`Segmenter` loads and prepares the model once; :meth:`Segmenter.run` handles one input
end to end. Every problem with an input or an output path is a one-line
:class:`~transunet_app.errors.UserError`; outputs are checked before any work so that nothing
is computed that cannot be saved, and nothing existing is replaced without ``overwrite``.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import CheckpointError, UserError
from ..outputs.staging import OutputSet, check_free_space, remove_stale
from .hospital import HospitalOutputs
from .outputs import (
    OutputPaths,
    check_writable,
    estimate_output_bytes,
    file_sha256,
    write_json,
    write_label_map,
    write_probabilities,
)
from .precision import resolve_precision


@dataclass
class RunResult:
    """What happened to one input."""

    input: Path
    outputs: list
    seconds: float
    warnings: list = field(default_factory=list)
    organs_found: int = 0
    #: seconds per phase of the inference: "prepare", "model" (slices -> labels), "postprocess"
    timings: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``--device``: "cpu", "cuda", "cuda:1" or "auto" (a GPU when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name (cpu, cuda, cuda:0, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .. import capabilities

        raise UserError(f"--device {name}: no CUDA GPU is available on this machine "
                        f"({capabilities.cuda().why}; use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    return dev


class Segmenter:
    """A checkpoint ready to segment volumes.

    Args:
        checkpoint: path to a ``transunet_app`` checkpoint (or give ``model``).
        model: instead of ``checkpoint``, a model package: an installed ``NAME[@VERSION]``
            or a package file (:func:`transunet_app.packages.store.resolve_model`); its card
            (name, version, SHA-256, licence, intended use) is recorded with every output.
        device: "cpu", "cuda[:i]" or "auto".
        precision: "auto", "fp32", "bf16" or "fp16".
        batch_size: slices per forward pass.
        tta: flip test-time augmentation.
        streams: batches computed side by side on CPU streams (None: 2 on a CPU with at least
            2 threads, else 1; see :mod:`transunet_app.inference.streams`).
        expected_classes: fail unless the checkpoint predicts this many classes (background
            included).

    Raises:
        CheckpointError: missing, corrupt or unsafe checkpoint, weights that do not fit, or a
            class count other than ``expected_classes``.
        PackageError: a refused model package (see :mod:`transunet_app.packages.verify`).
    """

    def __init__(self, checkpoint=None, device: str = "cpu", precision: str = "auto",
                 batch_size: int = 8, tta: bool = False, expected_classes: int | None = None,
                 streams: int | None = None, model=None):
        from ..checkpoint import load_checkpoint, model_from_checkpoint
        from .predictor import SlicePredictor

        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: must be at least 1")
        if streams is not None and streams < 1:
            raise UserError(f"--streams {streams}: must be at least 1")
        if (checkpoint is None) == (model is None):
            raise UserError("give exactly one of --checkpoint and --model")
        #: the model package (card + weights) when segmenting with ``model``, else None
        self.package = None
        if model is not None:
            from ..packages.store import resolve_model

            self.package = resolve_model(model)  # verified: hashes, no pickles, labels fit
            ckpt = self.package.checkpoint()
            self.checkpoint_path = self.package.source
            self._sha256, self._hashing = self.package.weights_sha256, None
        else:
            ckpt = load_checkpoint(self.checkpoint_path)
            self._sha256: str | None = None
            self._hashing = self._hash_checkpoint_meanwhile()  # while the model is prepared
        self.classes = [str(c) for c in ckpt["classes"]]
        if expected_classes is not None and len(self.classes) != int(expected_classes):
            raise CheckpointError(f"{self.checkpoint_path}: predicts {len(self.classes)} classes "
                                  f"({', '.join(self.classes)}), expected {expected_classes}")
        model = model_from_checkpoint(ckpt, str(self.checkpoint_path))
        self.model_config = dict(ckpt["model"])
        self.preprocessing = dict(ckpt["preprocessing"])
        # The model holds the weights themselves (model_from_checkpoint assigns the loaded
        # tensors): dropping the dict lets preparing free each float32 original as it is cast
        # or folded (a lower start-up peak: BENCHMARKS.md).
        del ckpt
        orientation = self.preprocessing.get("orientation", "SPL")
        if orientation != "SPL":
            raise CheckpointError(f"{self.checkpoint_path}: trained in orientation {orientation!r}; "
                                  f"only the canonical 'SPL' slice frame is supported")
        self.predictor = SlicePredictor(model, self.preprocessing, self.device, self.precision,
                                        batch_size=batch_size, tta=tta, streams=streams,
                                        source=str(self.checkpoint_path),
                                        class_names=self.classes)

    @property
    def checkpoint_sha256(self) -> str:
        if self._hashing is not None:
            self._hashing.join()
            self._hashing = None
        if self._sha256 is None:
            self._sha256 = file_sha256(self.checkpoint_path)
        return self._sha256

    def _hash_checkpoint_meanwhile(self):
        """Start hashing the checkpoint on a thread as soon as it is loaded,
        so the sidecar's SHA-256 (of the file the weights came from) costs no wall time in a
        run; returns the thread (joined by :attr:`checkpoint_sha256`)."""
        import threading

        def work():
            try:
                self._sha256 = file_sha256(self.checkpoint_path)
            except OSError:
                pass  # the property retries and reports it where it is needed

        thread = threading.Thread(target=work, name="checkpoint-sha256", daemon=True)
        thread.start()
        return thread

    def describe(self) -> str:
        p = self.preprocessing
        return (f"model {self.model_config.get('name')} ({len(self.classes)} classes), "
                f"img_size {p.get('img_size')}, HU window {p.get('hu_window')}, "
                f"device {self.device}, precision {self.precision}, "
                f"batch {self.predictor.batch_size} x {self.streams} stream(s)"
                f"{', TTA' if self.predictor.tta else ''}")

    @property
    def streams(self) -> int:
        """Batches computed side by side (resolved now: the default depends on torch's threads)."""
        from .streams import default_streams

        return self.predictor.streams or default_streams(self.device)

    # ------------------------------------------------------------------ one input

    def run(self, input_path, output_path, *, keep_largest: bool = False,
            probabilities: bool = False, statistics: bool = False, report: bool = False,
            overwrite: bool = False, series_uid: str | None = None,
            output_types=("nifti",), roi_subset=None, preview: bool = False,
            dicom_compress: bool = False,
            progress_factory: Callable[[int, str], object] | None = None,
            log: Callable[[str], None] = lambda s: None,
            warn: Callable[[str], None] = lambda s: None) -> RunResult:
        """Segment one input file or DICOM folder and write its outputs.

        Args:
            input_path: NIfTI/NRRD/MHA file or DICOM series folder.
            output_path: the label map to write (``.nii`` or ``.nii.gz``).
            keep_largest, probabilities, statistics, report: as the CLI flags.
            overwrite: replace existing outputs.
            series_uid: DICOM series to read (default: the largest).
            output_types: ``--output-type`` names (``nifti``, ``dicom-seg``, ``rtstruct``,
                ``seg-nrrd``); ``roi_subset``: organ names kept (None: all); ``preview``: write
                the three-plane PNG; ``dicom_compress``: JPEG 2000 lossless SEG pixel data.
            progress_factory: ``(total_slices, name) -> bar`` with ``update(n)`` and
                ``close()`` (a tqdm), or None.
            log: receives informational lines; ``warn``: receives warnings.

        Raises:
            UserError: bad input, or an output that exists / cannot be written.
        """
        import time

        from ..data import geometry
        from ..data.io import is_nifti_path, read_image
        from .checks import check_input
        from .volume import segment_image

        t0 = time.perf_counter()
        input_path, output_path = Path(input_path), Path(output_path)
        if not is_nifti_path(output_path):
            raise UserError(f"{output_path}: output label map must end with .nii.gz or .nii")
        paths = OutputPaths.for_label_map(output_path)
        wanted = paths.wanted(probabilities, statistics, report, output_types, preview)
        if input_path.exists() and any(_same_file(input_path, p) for p in wanted):
            raise UserError(f"{output_path}: would overwrite the input {input_path}")
        check_writable(wanted, overwrite)
        hospital = HospitalOutputs(paths, output_types, preview, roi_subset, dicom_compress)
        hospital.check_input(input_path)  # before any reading or inference

        image = read_image(input_path, series_uid=series_uid)
        hospital.check_image(image)
        for w in image.meta.get("warnings", []):
            warn(f"{input_path}: {w}")
        check_free_space(paths.labels.parent, estimate_output_bytes(
            image.shape, len(self.classes), probabilities=probabilities, statistics=statistics,
            report=report), f"the outputs of {input_path.name}")
        reo = geometry.plan_reorientation(image.affine, image.shape)
        check = check_input(image, reo)
        log(f"{input_path}: {check.summary()}")
        for w in check.warnings:
            warn(f"{input_path}: {w}")

        bar = progress_factory(check.slices, input_path.name) if progress_factory else None
        try:
            seg = segment_image(image, self.predictor, self.classes, keep_largest=keep_largest,
                                probabilities=probabilities, confidence=statistics or report,
                                progress=(bar.update if bar is not None else None), check=check)
        finally:
            if bar is not None:
                bar.close()

        written = self._write_outputs(image, seg, paths, hospital, wanted, keep_largest,
                                      probabilities, statistics, report, overwrite)
        return RunResult(input=input_path, outputs=written, seconds=time.perf_counter() - t0,
                         warnings=list(check.warnings) + list(image.meta.get("warnings", [])),
                         organs_found=self._organs_found(seg), timings=dict(seg.timings))

    def _write_outputs(self, image, seg, paths: OutputPaths, hospital: HospitalOutputs,
                       wanted: list[Path], keep_largest: bool, probabilities: bool,
                       statistics: bool, report: bool, overwrite: bool) -> list[Path]:
        """Stage and commit the outputs of one input as one unit: every file under a temporary
        name, all renamed together only when every one was written (the label map last, the
        sidecar when there is none); on a failure or a signal nothing is left behind."""
        remove_stale(paths.labels.parent)  # temporaries of a run killed with SIGKILL
        classes = hospital.select(seg.labels, self.classes)  # --roi-subset: others -> background
        last = paths.labels if hospital.nifti else paths.sidecar
        with OutputSet(overwrite=overwrite, last=last) as out:
            hospital.write(out, image, seg.labels, classes, self._provenance())
            if hospital.nifti:
                out.write(paths.labels, lambda tmp: write_label_map(tmp, seg.labels, image, False))
            sidecar = self._sidecar(image, seg, keep_largest)
            sidecar["labels"] = {str(i): n for i, n in classes.items()}
            sidecar["settings"].update(hospital.settings())
            sidecar["outputs"] = [p.name for p in wanted]
            out.write(paths.sidecar, lambda tmp: write_json(tmp, sidecar, False))
            if probabilities:
                out.write(paths.probabilities,
                          lambda tmp: write_probabilities(tmp, seg.probabilities, image, False))
                seg.probabilities = None
            if statistics or report:
                stats = self._statistics(image, seg, paths, sidecar, classes)
                stats["label_map"] = stats["label_map"] if hospital.nifti else None
            if statistics:
                out.write(paths.statistics, lambda tmp: write_json(tmp, stats, False))
            if report:
                self._report(image, paths, out, None if hospital.nifti else seg.labels)
        return list(wanted)

    def _organs_found(self, seg) -> int:
        # torch counts uint8 directly; np.bincount makes an int64 copy of the volume
        counts = torch.from_numpy(seg.labels.ravel(order="K")).bincount(
            minlength=len(self.classes)).numpy()
        return int(np.count_nonzero(counts[1:len(self.classes)]))

    def _provenance(self):
        from .. import __version__
        from ..outputs.organs import Provenance

        return Provenance(model=str(self.model_config.get("name")),
                          checkpoint_sha256=self.checkpoint_sha256, software_version=__version__)

    # ------------------------------------------------------------------ pieces

    def _sidecar(self, image, seg, keep_largest: bool) -> dict:
        from .. import __version__

        return {
            "labels": {str(i): name for i, name in enumerate(self.classes)},
            "model": self.model_config.get("name"),
            "model_config": self.model_config,
            "checkpoint": str(self.checkpoint_path.resolve()),
            "checkpoint_sha256": self.checkpoint_sha256,
            **({"model_card": self.package.provenance()} if self.package is not None else {}),
            "software_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "input": str(Path(image.source).resolve()),
            "input_format": image.meta.get("format"),
            "series_uid": image.meta.get("series_uid"),
            "preprocessing": self.preprocessing,
            "settings": {"device": str(self.device), "precision": self.precision,
                         "batch_size": self.predictor.batch_size, "streams": self.streams,
                         "tta": self.predictor.tta, "keep_largest": bool(keep_largest)},
            "input_check": seg.check.as_dict(),
            "reorientation": seg.reorientation.as_dict(),
            "seconds": round(seg.seconds, 3),
        }

    def _statistics(self, image, seg, paths: OutputPaths, sidecar: dict, classes=None) -> dict:
        from ..metrics.organ_stats import organ_statistics

        organs = organ_statistics(seg.labels, image_hu=image.array, spacing_mm=image.spacing,
                                  class_names=classes if classes is not None else self.classes,
                                  affine=image.affine)
        for name, entry in organs.items():
            conf = (seg.confidence or {}).get(name, {})
            entry.update(conf)
            if entry["status"] == "absent":
                entry["confidence"] = None
        return {"input": sidecar["input"], "label_map": str(paths.labels.resolve()),
                "model": sidecar["model"], "checkpoint": sidecar["checkpoint"],
                "checkpoint_sha256": sidecar["checkpoint_sha256"],
                **({"model_card": sidecar["model_card"]} if "model_card" in sidecar else {}),
                "settings": sidecar["settings"], "input_check": sidecar["input_check"],
                "organs": organs}

    def _report(self, image, paths: OutputPaths, out: OutputSet, labels=None) -> Path:
        """The HTML report, read from the staged label map and sidecar under their final names
        (hard links in a scratch folder: the report finds the sidecar by the label map's name).
        ``labels``: the label volume when no NIfTI label map is among the outputs (then a
        temporary one is written in the scratch folder)."""
        from ..report import write_scan_report

        prov = {"model": self.model_config.get("name"), "checkpoint": str(self.checkpoint_path),
                "checkpoint_sha256": self.checkpoint_sha256}
        if self.package is not None:
            prov.update(model_card_provenance(self.package.provenance()))
        scratch = out.scratch_dir(paths.report.parent)
        label_map = scratch / paths.labels.name
        links = [(paths.sidecar, scratch / paths.sidecar.name)]
        # the report names the files the user keeps, never the scratch copies it reads
        prov["ct_source"] = str(image.source)
        kept = [p for p in (None if labels is not None else paths.labels, paths.dicom_seg,
                            paths.rtstruct, paths.seg_nrrd) if p is not None and out.has(p)]
        prov["labels_source"] = str(kept[0]) if kept else f"{paths.sidecar} (label map not kept)"
        prov["label_names_source"] = str(paths.sidecar)
        if labels is None:
            links.append((paths.labels, label_map))
        else:
            from ..data.io import write_nifti

            write_nifti(label_map, labels, like=image, dtype=np.uint8)
        for final, dst in links:
            try:
                os.link(out.staged(final), dst)
            except OSError:
                import shutil

                shutil.copyfile(out.staged(final), dst)
        src = Path(image.source)
        if src.is_dir():
            # The report reads image files, not DICOM folders: hand it a temporary NIfTI, named
            # after the label map so that no case name (a folder called "ct") can collide.
            from ..data.io import write_nifti

            ct = scratch / f"source-{paths.labels.name}"
            write_nifti(ct, image.array, like=image)
            src = ct
        out.write(paths.report, lambda tmp: write_scan_report(src, label_map, tmp, provenance=prov,
                                                             overwrite=False))
        return paths.report


def model_card_provenance(card: dict) -> dict:
    """Report provenance rows of a model package (what the card says the model is for)."""
    return {"model_package": f"{card.get('name')} {card.get('version')}",
            "model_weights_sha256": card.get("weights_sha256"),
            "model_card_sha256": card.get("card_sha256"),
            "intended_use": card.get("intended_use"), "license": card.get("license"),
            "not_intended_for": card.get("not_intended_for"), "model_validation": card.get("validation")}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
