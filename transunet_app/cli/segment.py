"""``segment INPUT... -o OUTPUT --checkpoint CKPT``: label the organs of CT scans.

INPUT is any mix of ``.nii``/``.nii.gz`` files, other files SimpleITK reads (``.nrrd``,
``.mha``, ...), folders of such files, and DICOM series folders (a folder without volume
files is read as a DICOM series; with several series the largest, or ``--series UID``); a
folder holding neither but DICOM series folders below it, at any depth (a CD export with
DICOMDIR, a PACS download), gives one case per series folder.

One input and an OUTPUT ending in ``.nii.gz``/``.nii`` writes that file; otherwise OUTPUT is a
folder (created if missing) receiving ``<case>.nii.gz`` per input. Bad inputs are reported
one line each; in folder mode the others still complete and the run ends with a summary and
exit code 1. Exit code 2: a bad checkpoint, bad options, or a single input that fails.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..data.files import case_name, list_volumes

HELP = "segment CT volumes (NIfTI, DICOM, NRRD, MHA) with a trained checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="CT volume files, folders of them, or DICOM series folders")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="label map file (.nii.gz) for one input, else an output folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT", help="trained transunet_app checkpoint (.pt)")
    source.add_argument("--model", metavar="NAME|PKG.zip",
                        help="an installed model (transunet models install) or a model package")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto = bf16 on CPUs with AMX or AVX512-BF16 and on GPUs, else fp32 (default: auto)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="axial slices per forward pass (default: 8)")
    parser.add_argument("--tta", action="store_true",
                        help="average predictions over left-right and front-back flips (3x time)")
    parser.add_argument("--keep-largest", action="store_true",
                        help="keep only the largest connected component of each organ")
    parser.add_argument("--probabilities", action="store_true",
                        help="also save <case>_probabilities.nii.gz (4D, one volume per class)")
    parser.add_argument("--statistics", action="store_true",
                        help="also save <case>_statistics.json (volume mL, HU, status, confidence)")
    parser.add_argument("--report", action="store_true",
                        help="also save the clinician report <case>_report.html")
    parser.add_argument("--series", metavar="UID", help="DICOM SeriesInstanceUID to read")
    parser.add_argument("--num-classes", type=int, metavar="K",
                        help="fail unless the checkpoint predicts K classes (background included)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip inputs whose label map already exists")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="volumes segmented in parallel by N processes (default: 1)")
    parser.add_argument("--shard", metavar="I/N",
                        help="process only share I of N (1-based) of the sorted inputs, so "
                             "several processes or machines can split a folder")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads per process (default: all cores / jobs)")
    parser.add_argument("--streams", type=int, metavar="S",
                        help="batches computed side by side within a process, each on threads/S "
                             "threads (default: 2 on a CPU with at least 2 threads, else 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    hosp = parser.add_argument_group("hospital formats (DICOM SEG / RTSTRUCT need a DICOM series input)")
    hosp.add_argument("--output-type", default="nifti", metavar="TYPES",
                      help="comma list of nifti (default), dicom-seg (<case>_seg.dcm), rtstruct "
                           "(<case>_rtstruct.dcm), seg-nrrd (<case>.seg.nrrd, 3D Slicer)")
    hosp.add_argument("--roi-subset", metavar="NAMES",
                      help="comma list of organs to keep (e.g. aorta,liver); others become background "
                           "in every output")
    hosp.add_argument("--preview", action="store_true",
                      help="also save <case>_preview.png (axial, coronal, sagittal overlays)")
    hosp.add_argument("--dicom-compress", action="store_true",
                      help="DICOM SEG pixel data as JPEG 2000 lossless (needs pylibjpeg-openjpeg)")


# --------------------------------------------------------------------------- planning


def _is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (``DICM`` after the 128-byte preamble), or named ``.dcm``/``.ima``;
    the DICOMDIR index of a CD export holds no image and does not count."""
    if path.name.upper() == "DICOMDIR":
        return False
    if path.suffix.lower() in (".dcm", ".ima"):
        return True
    from pydicom.misc import is_dicom

    try:
        return is_dicom(path)
    except OSError:
        return False


def _holds_dicom(folder: Path) -> bool:
    return any(e.is_file() and not e.name.startswith(".") and _is_dicom_file(e)
               for e in folder.iterdir())


def _series_folders_below(root: Path) -> dict[Path, str]:
    """Folders below ``root`` that hold DICOM files themselves, at any depth (a folder of series
    folders, a CD/DVD export with DICOMDIR and PATIENT/STUDY/SERIES folders, a PACS download),
    each with its case name: its path below ``root`` joined by "_" (``PA1/ST1/SE1`` ->
    ``PA1_ST1_SE1``; a direct subfolder keeps its own name)."""
    found = {}
    for dirpath, dirnames, _files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        if folder != root and _holds_dicom(folder):
            found[folder] = "_".join(folder.relative_to(root).parts)
    return found


def expand_inputs(inputs: list[str]) -> tuple[list[Path], bool, dict[Path, str]]:
    """Input paths to segment, whether this is folder mode (several or a folder of volumes),
    and the case names of series folders found below an input (others: :func:`case_name`).

    Missing paths are kept: they fail later with their own message.
    """
    out: list[Path] = []
    names: dict[Path, str] = {}
    folder_mode = len(inputs) > 1
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = list_volumes(p)
            below = _series_folders_below(p) if not files and not _holds_dicom(p) else {}
            if files:
                out.extend(files)
                folder_mode = True
            elif below:  # DICOM series folders below this one: one case each
                out.extend(below)
                names.update(below)
                folder_mode = True
            else:
                out.append(p)  # a DICOM series folder
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, folder_mode, names


def parse_shard(text: str | None) -> tuple[int, int] | None:
    from ..errors import UserError

    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text}: expected I/N, e.g. 2/4") from None
    if n < 1 or not 1 <= i <= n:
        raise UserError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def plan_outputs(inputs: list[Path], output: str, folder_mode: bool,
                 names: dict[Path, str] | None = None) -> list[tuple[Path, Path]]:
    """(input, label map path) pairs; creates the output folder in folder mode. ``names``: case
    names of inputs that do not take :func:`case_name` (series folders found below an input)."""
    from ..errors import UserError

    out = Path(output)
    single_file = (not folder_mode and len(inputs) == 1 and not out.is_dir()
                   and out.name.lower().endswith((".nii", ".nii.gz")))
    if single_file:
        return [(inputs[0], out)]
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (several inputs need an output folder)")
    if folder_mode and out.name.lower().endswith((".nii", ".nii.gz")):
        raise UserError(f"{out}: several inputs need an output folder, not a .nii.gz file name")
    if not folder_mode and not out.exists() and out.suffix:
        raise UserError(f"{out}: output label map must end with .nii.gz or .nii (or name a folder)")
    out.mkdir(parents=True, exist_ok=True)
    pairs, taken = [], {}
    for p in inputs:
        name = (names or {}).get(p) or case_name(p)
        if name in taken:
            raise UserError(f"{p}: same case name {name!r} as {taken[name]}; outputs would collide")
        taken[name] = p
        pairs.append((p, out / f"{name}.nii.gz"))
    return pairs


# --------------------------------------------------------------------------- running


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def _warn(text: str) -> None:
    print(f"segment: warning: {text}", file=sys.stderr, flush=True)


def _settings(args, redo: bool = False) -> dict:
    """Segmenter.run keywords; ``redo``: replace an incomplete set an earlier run left."""
    return {"keep_largest": args.keep_largest, "probabilities": args.probabilities,
            "statistics": args.statistics, "report": args.report,
            "overwrite": args.overwrite or redo, "series_uid": args.series, **_hospital_settings(args)}


def _hospital_settings(args) -> dict:
    """--output-type / --roi-subset / --preview / --dicom-compress as Segmenter.run arguments
    (``args.roi_subset_names``: the names checked against the checkpoint's classes)."""
    from ..inference.outputs import parse_output_types

    return {"output_types": parse_output_types(args.output_type),
            "roi_subset": getattr(args, "roi_subset_names", None), "preview": args.preview,
            "dicom_compress": args.dicom_compress}


def _check_hospital_options(args, inputs, class_names=None) -> None:
    """Before any model is loaded (and again with the classes once it is): refuse a
    SEG/RTSTRUCT for non-DICOM inputs and unknown --roi-subset names, one line each."""
    from ..inference.outputs import DICOM_REFERENCING_TYPES, parse_output_types

    types = parse_output_types(args.output_type)
    referencing = [t for t in types if t in DICOM_REFERENCING_TYPES]
    if referencing:
        from ..inference.hospital import refuse_unreferencable_input

        for p in inputs:
            refuse_unreferencable_input(p, referencing)
    if class_names is not None:
        from ..outputs.organs import parse_roi_subset

        args.roi_subset_names = parse_roi_subset(args.roi_subset, class_names)


def _segmenter_kwargs(args) -> dict:
    return {"checkpoint": args.checkpoint, "model": getattr(args, "model", None), "device": args.device,
            "precision": args.precision,
            "batch_size": args.batch_size, "tta": args.tta, "expected_classes": args.num_classes,
            "streams": args.streams}


def _existing_state(args, dst: Path) -> str:
    """``"done"`` (a complete output set), ``"incomplete"`` (some of the set from a run that
    was cut short: redone, its files replaced) or ``"absent"``."""
    from ..inference.outputs import OutputPaths, outputs_complete

    paths = OutputPaths.for_label_map(dst)
    wanted = paths.wanted(args.probabilities, args.statistics, args.report,
                          _hospital_settings(args)["output_types"], args.preview)
    if outputs_complete(paths, wanted):
        return "done"
    if any(p.exists() for p in wanted):
        return "incomplete"
    return "absent"


def run(args) -> int:
    from ..errors import FULL_OR_READ_ONLY, StorageError, UserError, describe_os_error
    from ..inference.outputs import OutputPaths, check_writable

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    if args.overwrite and args.skip_existing:
        raise UserError("--overwrite and --skip-existing contradict each other; give one")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UserError(f"{args.checkpoint}: no such checkpoint file")
    _check_device_and_precision(args)
    inputs, folder_mode, names = expand_inputs(args.inputs)
    shard = parse_shard(args.shard)
    if shard is not None:
        i, n = shard
        inputs = inputs[i - 1::n]
        folder_mode = True
        if not inputs:
            _say(args.quiet, f"shard {args.shard}: no inputs in this share")
            return 0
    _check_hospital_options(args, inputs)
    pairs = plan_outputs(inputs, args.output, folder_mode, names)

    if not folder_mode:
        (src, dst), = pairs
        if not src.exists():
            raise UserError(f"{src}: no such file or folder")
        redo = False
        if args.skip_existing:
            state = _existing_state(args, dst)
            if state == "done":
                _say(args.quiet, f"{src}: skipped, {dst} exists")
                return 0
            redo = state == "incomplete"
        paths = OutputPaths.for_label_map(dst)
        if not redo:
            check_writable(paths.wanted(args.probabilities, args.statistics, args.report,
                                        _hospital_settings(args)["output_types"], args.preview),
                           args.overwrite)
        segmenter = _make_segmenter(args, jobs=1)
        _check_hospital_options(args, inputs, segmenter.classes)
        result = segmenter.run(src, dst, progress_factory=_progress_factory(args.quiet),
                               log=lambda s: _say(args.quiet, s), warn=_warn,
                               **_settings(args, redo))
        _say(args.quiet, f"{src} -> {dst} ({result.organs_found} organs, {result.seconds:.1f} s)")
        return 0

    todo, skipped = [], 0
    redo: set[Path] = set()
    for src, dst in pairs:
        state = _existing_state(args, dst) if args.skip_existing else "absent"
        if state == "done":
            skipped += 1
            _say(args.quiet, f"{src}: skipped, {dst} exists")
        else:
            if state == "incomplete":
                redo.add(dst)
            todo.append((src, dst))
    failures: list[tuple[Path, str]] = []
    done = 0
    if todo:
        if args.jobs > 1 and len(todo) > 1:
            done, failures = _run_parallel(args, todo, redo)
        else:
            segmenter = _make_segmenter(args, jobs=1)
            _check_hospital_options(args, inputs, segmenter.classes)
            _say(args.quiet, segmenter.describe())
            for src, dst in todo:
                try:
                    r = segmenter.run(src, dst, progress_factory=_progress_factory(args.quiet),
                                      log=lambda s: _say(args.quiet, s), warn=_warn,
                                      **_settings(args, dst in redo))
                except StorageError:
                    raise  # the output file system is full or read-only: the rest would fail too
                except UserError as exc:
                    failures.append((src, str(exc)))
                    print(f"segment: error: {exc}", file=sys.stderr, flush=True)
                    continue
                except OSError as exc:
                    if exc.errno in FULL_OR_READ_ONLY:
                        raise
                    msg = describe_os_error(exc, src)
                    failures.append((src, msg))
                    print(f"segment: error: {msg}", file=sys.stderr, flush=True)
                    continue
                except Exception as exc:  # a bug or resource problem on one file: keep going
                    msg = f"{src}: failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                    failures.append((src, msg))
                    print(f"segment: error: {msg}", file=sys.stderr, flush=True)
                    continue
                done += 1
                _say(args.quiet, f"{src} -> {dst} ({r.organs_found} organs, {r.seconds:.1f} s)")
    summary = (f"segment: {done} segmented, {skipped} skipped, {len(failures)} failed "
               f"(of {len(pairs)} inputs)")
    print(summary, file=sys.stderr if failures else sys.stdout, flush=True)
    for _src, msg in failures:
        print(f"  failed: {msg}", file=sys.stderr)
    return 1 if failures else 0


def _check_device_and_precision(args) -> None:
    """A device that is not there is one line before any work; a precision that runs slowly
    on this CPU is a warning (it still runs, on plain torch layers)."""
    from ..inference.pipeline import resolve_device
    from ..inference.precision import precision_warning, resolve_precision

    device = resolve_device(args.device)
    note = precision_warning(resolve_precision(args.precision, device), device)
    if note:
        _warn(note)


def _make_segmenter(args, jobs: int):
    import torch

    from ..inference import Segmenter
    from ..inference.memory import reuse_freed_memory

    reuse_freed_memory()  # a short-lived process: keep large blocks instead of re-faulting them
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    torch.set_num_threads(threads)
    return Segmenter(**_segmenter_kwargs(args))


def _progress_factory(quiet: bool):
    if quiet:
        return None

    def make(total: int, name: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=name, unit="slice", leave=False, file=sys.stderr,
                    dynamic_ncols=True)

    return make


# --------------------------------------------------------------------------- --jobs N

_WORKER = {}


def _worker_init(seg_kwargs: dict, threads: int) -> None:
    import torch

    from ..inference import Segmenter
    from .guard import install_signal_handlers

    install_signal_handlers()  # SIGTERM from the parent: staged files removed, then exit
    from ..inference.memory import reuse_freed_memory

    reuse_freed_memory()
    torch.set_num_threads(threads)
    _WORKER["segmenter"] = Segmenter(**seg_kwargs)


def _worker_run(src: str, dst: str, settings: dict) -> tuple[str, str, str, float, list]:
    from ..errors import UserError

    warnings: list[str] = []
    try:
        r = _WORKER["segmenter"].run(src, dst, warn=warnings.append, **settings)
    except KeyboardInterrupt as exc:  # SIGTERM/SIGINT: staged files are gone by now; leave
        os._exit(getattr(exc, "exit_code", 130))
    except UserError as exc:
        return ("fatal" if getattr(exc, "exit_code", 2) == 3 else "error"), src, str(exc), 0.0, warnings
    except OSError as exc:
        from ..errors import FULL_OR_READ_ONLY, describe_os_error

        status = "fatal" if exc.errno in FULL_OR_READ_ONLY else "error"
        return status, src, describe_os_error(exc, src), 0.0, warnings
    except Exception as exc:
        return "error", src, f"{src}: failed ({type(exc).__name__}: {exc})".splitlines()[0], 0.0, warnings
    return "ok", src, f"{src} -> {dst} ({r.organs_found} organs, {r.seconds:.1f} s)", r.seconds, warnings


def _run_parallel(args, todo, redo=frozenset()):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from ..checkpoint import load_checkpoint
    from ..errors import CheckpointError

    # Validate the checkpoint once here: a bad one is exit code 2, not N worker failures.
    if getattr(args, "model", None) is not None:
        from ..packages.store import resolve_model

        ckpt = resolve_model(args.model).checkpoint()
    else:
        ckpt = load_checkpoint(args.checkpoint)
    if args.num_classes is not None and len(ckpt["classes"]) != args.num_classes:
        raise CheckpointError(f"{args.checkpoint or args.model}: predicts {len(ckpt['classes'])} classes "
                              f"({', '.join(map(str, ckpt['classes']))}), expected {args.num_classes}")
    _check_hospital_options(args, [], [str(c) for c in ckpt["classes"]])
    del ckpt
    jobs = min(args.jobs, len(todo))
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    failures, done = [], 0
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                               initargs=(_segmenter_kwargs(args), threads))
    try:
        futures = {pool.submit(_worker_run, str(s), str(d), _settings(args, d in redo)): s
                   for s, d in todo}
        for fut in as_completed(futures):
            try:
                status, src, msg, _, warnings = fut.result()
            except Exception as exc:  # a worker died (out of memory, killed): report, go on
                status, src, warnings = "error", str(futures[fut]), []
                msg = f"{src}: worker process failed ({type(exc).__name__})"

            for w in warnings:
                _warn(w)
            if status == "ok":
                done += 1
                _say(args.quiet, msg)
            elif status == "fatal":  # output file system full or read-only: stop all
                from ..errors import StorageError

                raise StorageError(msg)
            else:
                failures.append((Path(src), msg))
                print(f"segment: error: {msg}", file=sys.stderr, flush=True)
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)
    return done, failures


def _stop_workers(pool) -> None:
    """SIGTERM every worker (each removes its staged files and exits), then wait for them."""
    import signal

    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except OSError:
                pass
    for p in procs:
        p.join(timeout=30)
