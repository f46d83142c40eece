"""Learning check: the tiny model fitted to the 30 axial slices of the real abdominal CT.

``configs/real_ct_learning.yaml`` trained on the real CT sample (``../shared/data``: 3 mm,
8 Synapse organs) and scored on the same slices. It shows that the engine learns (loss,
augmentation, schedule, validation all wired right); it says nothing about generalisation.
Goal: mean Dice over the 8 organs >= 0.85 in under 10 CPU minutes.

Used by the slow test ``tests/engine/test_learning_check.py``, by
``tools/bench/bench_train.py --learning-check`` and, for a trained model to compare
precisions on, by :mod:`transunet_app.inference.agreement`.
"""
from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "real_ct_learning.yaml"
LABELS_YAML = REPO / "datasets" / "synapse" / "labels_8class.yaml"
CT_NAME = "ct_abdomen_3mm.nii.gz"
LABELS_NAME = "ct_abdomen_3mm_labels.nii.gz"


def prepare_real_ct(shared: Path, work: Path) -> Path:
    """Prepare the real CT as a one-case training set under ``work``; returns the data root.

    The CT and its labels are linked (not copied) as ``work/src/{imagesTr,labelsTr}/ct.nii.gz``
    and prepared into ``work/data`` with the 8-organ Synapse labels; an existing preparation is
    reused.
    """
    from ..data.folders import prepare_folder

    src = work / "src"
    for sub, name in (("imagesTr", CT_NAME), ("labelsTr", LABELS_NAME)):
        (src / sub).mkdir(parents=True, exist_ok=True)
        link = src / sub / "ct.nii.gz"
        if not link.exists():
            link.symlink_to((Path(shared) / name).resolve())
    data = work / "data"
    if not (data / "dataset.yaml").exists():
        prepare_folder(src, data, labels_yaml=LABELS_YAML, splits={"train": ["ct"], "test": []},
                       overwrite=True)
    return data


def train_real_ct(shared: Path, work: Path, overrides=()) -> Path:
    """Train ``configs/real_ct_learning.yaml`` on the real CT in ``work/run``; returns the best
    checkpoint.

    Args:
        shared: folder holding ``ct_abdomen_3mm.nii.gz`` and ``ct_abdomen_3mm_labels.nii.gz``.
        work: folder for the prepared slices and the run (an old run there is replaced).
        overrides: extra ``key=value`` config overrides (e.g. ``train.max_iterations=100``).
    """
    from . import train

    work = Path(work)
    data = prepare_real_ct(Path(shared), work)
    run = work / "run"
    if run.exists():
        shutil.rmtree(run)
    return train(CONFIG, run, overrides=[f"data.root={data}", "log.progress=false", *overrides])


def learning_check(shared: Path, overrides=()) -> dict:
    """Train on the real CT in a temporary folder and report what the model learnt.

    Returns:
        ``{"mean_dice", "per_organ": {organ: Dice}, "hd95": {organ: HD95} (or None),
        "hd95_convention", "cpu_minutes", "wall_minutes",
        "validations": [(iteration, mean Dice), ...], "overrides"}`` from the best checkpoint
        and the run log; ``{"skipped": why}`` when the CT sample is absent. CPU minutes are the
        process's user + system time (every thread counted).
    """
    from ..checkpoint import load_checkpoint

    shared = Path(shared)
    if not (shared / CT_NAME).exists():
        return {"skipped": f"real CT sample not found in {shared.resolve()}"}
    overrides = list(overrides)
    with tempfile.TemporaryDirectory(prefix="learning_check_") as tmp:
        work = Path(tmp)
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        best = train_real_ct(shared, work, overrides)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF)
        metrics = load_checkpoint(best)["metrics"]
        history = [json.loads(ln) for ln in (work / "run" / "log.jsonl").read_text().splitlines()]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    vals = [(r["iteration"], r["mean_dice"]) for r in history if r.get("event") == "validation"]
    return {"mean_dice": metrics["mean_dice"], "per_organ": metrics["per_organ"], "hd95": metrics.get("hd95"),
            "hd95_convention": metrics.get("hd95_convention"), "cpu_minutes": cpu / 60,
            "wall_minutes": wall / 60, "validations": vals, "overrides": overrides}
