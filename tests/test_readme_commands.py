"""Every command README.md shows is run by a test (issue 7: "Every command shown is one that a
test or the demo runs").

``EXERCISED`` maps each README command to how it is exercised:

* ``verbatim``: run exactly as printed, in a temporary folder that holds inputs under the
  README's own names (``scan.nii.gz``, ``model.pt``, ``preds/``, ...);
* ``substituted``: run with the substitutions declared next to it (paths to small test data,
  overrides that only shrink the run);
* ``elsewhere``: exercised by the named test or script (checked to exist and, for scripts, to
  hold the command).

The map test fails when README gains a command the map does not know, or the map keeps one
README no longer shows (``MAY_BE_ABSENT`` excepted: commands whose README text is proposed to
change), so neither can rot. For ``verbatim``/``substituted`` entries
the named test function of this file must contain the command text, or the name of the constant
holding it (that is how it picks it up).

``TRANSUNET_README=path`` checks a proposed README against the same map.
"""
from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .readme_commands import ROOT, parse_readme, readme_commands, run_argv, substitute
from .volume_files import save_nifti, sitk_from_ras, write_dicom_series


@dataclass(frozen=True)
class Exercise:
    how: str  # "verbatim" | "substituted" | "elsewhere"
    test: str  # test function of this file, or "path" / "path::test_name"
    replacements: tuple[tuple[str, str], ...] = ()  # (README text, what the test runs instead)
    extra: tuple[str, ...] = ()  # arguments appended: overrides that only shrink the run
    why: str = ""


# Shrinks the Synapse R50-ViT-B_16 recipe to seconds: 32x32 slices, batch 2, 2 iterations,
# in-process loading; model, pretrained weights, optimiser, loss and augmentation stay the recipe's.
SYNAPSE_SHRINK = ("data.img_size=32", "train.batch_size=2", "train.max_iterations=2", "data.num_workers=0",
                  "log.progress=false")
SYNAPSE_PATHS = (("/data/", "data/"),)  # the README's absolute /data root -> the test's ./data

# README's Synapse evaluation step as proposed to the lead (the shown one segments all 30 scans
# and never makes refs/): while README changes over, either segment command may be the one shown.
SEGMENT_ALL_SCANS = "segment /data/Abdomen/img/ -o preds/ --checkpoint runs/r50/checkpoints/best.pt"
SEGMENT_TEST_CASES = ("segment /data/Abdomen/img/img00{01,02,03,04,08,22,25,29,32,35,36,38}.nii.gz -o preds/ "
                      "--checkpoint runs/r50/checkpoints/best.pt")
MAKE_REFS = "transunet synapse-refs --raw /data/Abdomen --out refs/"
# A shorthand in prose that cannot run as shown (elided arguments); proposed for removal.
TORCHRUN_SCRIPT_SHORTHAND = "torchrun $(which transunet) train ..."
MAY_BE_ABSENT = {SEGMENT_ALL_SCANS, SEGMENT_TEST_CASES, MAKE_REFS, TORCHRUN_SCRIPT_SHORTHAND}

EXERCISED: dict[str, Exercise] = {
    # -- the two commands
    "pip install -q torch==2.13.0": Exercise(
        "elsewhere", ".ci/run", why="CI runs the README's setup line on a fresh clone"),
    "pip install -q -e .": Exercise(
        "elsewhere", ".ci/run", replacements=(("-e .", "-e .[test,export]"),),
        why="CI installs -e \".[test,export]\", the same install plus pytest and the export extra"),
    "transunet demo --out demo_out": Exercise(
        "elsewhere", "tests/test_demo.py::test_demo_end_to_end", why="slow: the whole demo, outputs checked"),
    "pip install -q -e .[test,export]": Exercise("elsewhere", ".ci/run"),
    "python -m pytest -n 2 -q": Exercise("elsewhere", ".ci/run"),
    "python -m pytest -n 2 -q -m slow": Exercise("elsewhere", ".ci/run"),
    # -- segment your own scan
    "segment scan.nii.gz": Exercise(
        "elsewhere", "test_segment_a_scan_then_report",
        why="shorthand in the introduction for the full command below"),
    "segment scan.nii.gz -o scan_labels.nii.gz --checkpoint model.pt --statistics --report": Exercise(
        "verbatim", "test_segment_a_scan_then_report"),
    "segment --report": Exercise(
        "elsewhere", "test_segment_a_scan_then_report", why="option named in prose; the command above uses it"),
    "segment dicom_series_folder/ -o labels/ --checkpoint model.pt": Exercise(
        "verbatim", "test_segment_dicom_series_and_folder"),
    "segment scans/ -o labels/ --checkpoint model.pt --jobs 2": Exercise(
        "verbatim", "test_segment_dicom_series_and_folder"),
    "transunet convert epoch_149.pth -o transunet_synapse.pt --model R50-ViT-B_16": Exercise(
        "verbatim", "test_synapse_prepare_train_segment_evaluate",
        why="slow: a 105 M-parameter official-format state dict; tests/cli/test_convert.py "
            "checks the conversion's logits on ViT-B_16"),
    "transunet convert": Exercise(
        "elsewhere", "tests/cli/test_convert.py::test_convert_official_checkpoint",
        why="command named in prose; its full form above is run verbatim"),
    # -- several machines (tests/faults/test_multinode.py: two torchrun nodes on loopback)
    "torchrun --nnodes 2 --nproc_per_node 4 --node_rank 0 --master_addr node01 --master_port 29400 "
    "--max_restarts 0 -m transunet_app train --config configs/synapse_r50_vit_b16.yaml --output /shared/runs/r50 "
    "data.root=/shared/Synapse": Exercise(
        "elsewhere", "tests/faults/test_multinode.py::test_lost_node_stops_the_other_then_both_resume",
        why="slow: the same torchrun flags with --nproc_per_node 1, 127.0.0.1 and the tiny config "
            "(the static cases train, lose node 0, and resume to the end)"),
    "torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint node01:29400 --rdzv_id r50 "
    "--max_restarts 0 -m transunet_app train --config configs/synapse_r50_vit_b16.yaml --output /shared/runs/r50 "
    "data.root=/shared/Synapse": Exercise(
        "elsewhere", "tests/faults/test_multinode.py::test_two_nodes_train_the_tiny_config",
        why="slow: the same torchrun flags with --nproc_per_node 1, 127.0.0.1 and the tiny config"),
    "export HEAD_NODE=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)": Exercise(
        "elsewhere", "tests/faults/test_multinode.py::test_readme_slurm_script_gives_each_node_its_rank",
        why="SLURM is not available in CI: the script runs under stand-ins for scontrol, srun and torchrun"),
    'srun bash -c torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 4 --node_rank "$SLURM_NODEID"  '
    '--master_addr "$HEAD_NODE" --master_port 29400 --max_restarts 0  -m transunet_app train '
    '--config configs/synapse_r50_vit_b16.yaml --output /shared/runs/r50 data.root=/shared/Synapse': Exercise(
        "elsewhere", "tests/faults/test_multinode.py::test_readme_slurm_script_gives_each_node_its_rank",
        why="SLURM is not available in CI: the script runs under stand-ins that check each node's "
            "--node_rank and --master_addr; the torchrun flags are run on loopback by the slow tests"),
    # -- train on Synapse (raw data in the official img/ + label/ layout written by the test)
    "transunet prepare synapse --raw /data/Abdomen --out /data/Synapse": Exercise(
        "substituted", "test_synapse_prepare_train_segment_evaluate", replacements=SYNAPSE_PATHS),
    "transunet prepare folder --src DIR --out DIR": Exercise(
        "substituted", "test_prepare_folder", replacements=(("--src DIR", "--src msd"), ("--out DIR", "--out prepared"))),
    "transunet train --config configs/synapse_r50_vit_b16.yaml --output runs/r50 data.root=/data/Synapse "
    "model.pretrained=R50+ViT-B_16.npz": Exercise(
        "substituted", "test_synapse_prepare_train_segment_evaluate", replacements=SYNAPSE_PATHS,
        extra=SYNAPSE_SHRINK),
    "tensorboard --logdir runs/r50": Exercise(
        "elsewhere", "test_synapse_prepare_train_segment_evaluate",
        why="runs/r50 is read with TensorBoard's own event reader (the web server is not started)"),
    SEGMENT_ALL_SCANS: Exercise(
        "substituted", "test_synapse_prepare_train_segment_evaluate", replacements=SYNAPSE_PATHS),
    SEGMENT_TEST_CASES: Exercise(
        "substituted", "test_synapse_prepare_train_segment_evaluate",
        replacements=(("img00{01,02,03,04,08,22,25,29,32,35,36,38}.nii.gz", "img0001.nii.gz"),) + SYNAPSE_PATHS,
        why="the test's download holds one of the 12 test cases"),
    MAKE_REFS: Exercise(
        "substituted", "test_synapse_prepare_train_segment_evaluate", replacements=SYNAPSE_PATHS),
    "transunet evaluate --pred preds/ --gt refs/ -o metrics.json --convention transunet": Exercise(
        "verbatim", "test_synapse_prepare_train_segment_evaluate"),
    # -- multi-GPU
    "torchrun --nproc_per_node 4 -m transunet_app train --config configs/synapse_r50_vit_b16.yaml --output runs/r50 "
    "data.root=/data/Synapse": Exercise(
        "substituted", "test_synapse_prepare_train_segment_evaluate",
        replacements=(("--nproc_per_node 4", "--nproc_per_node 2"), ("--output runs/r50", "--output runs/r50_ddp"))
        + SYNAPSE_PATHS, extra=SYNAPSE_SHRINK,
        why="2 CPU processes (gloo); tests/engine/test_ddp.py checks the ranks stay identical"),
    TORCHRUN_SCRIPT_SHORTHAND: Exercise(
        "elsewhere", "test_synapse_prepare_train_segment_evaluate",
        why="an alternative spelling in prose (elided arguments) of the torchrun command above"),
    # -- backbones
    "transunet info": Exercise("verbatim", "test_info_lists_every_backbone"),
    "python tools/bench/bench_model.py --batches 8 --rounds 3 --modes fp32 bf16-inference": Exercise(
        "substituted", "test_bench_model_prints_the_table",
        extra=("--models", "tiny", "--size", "32", "32", "--rounds", "1", "--modes", "fp32")),
    # -- evaluation conventions, reports
    "transunet evaluate --pred preds/ --gt refs/ -o metrics.json --csv metrics.csv": Exercise(
        "verbatim", "test_evaluate_both_conventions_then_dataset_report"),
    "transunet evaluate --pred preds/ --gt refs/ -o paper.json --convention transunet": Exercise(
        "verbatim", "test_evaluate_both_conventions_then_dataset_report"),
    "transunet report --metrics metrics.json -o evaluation_report.html": Exercise(
        "verbatim", "test_evaluate_both_conventions_then_dataset_report"),
    "transunet report --image scan.nii.gz --labels scan_labels.nii.gz -o scan_report.html": Exercise(
        "verbatim", "test_segment_a_scan_then_report"),
    # -- share a trained model (run as printed, in a folder with the README's file names)
    'transunet package runs/r50 -o abdomen-r50.zip --card card.yaml': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_share_a_trained_model_as_the_readme_shows'),
    'transunet package': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_share_a_trained_model_as_the_readme_shows', why="named in prose"),
    'transunet models install abdomen-r50.zip': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_share_a_trained_model_as_the_readme_shows'),
    'transunet models list': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_share_a_trained_model_as_the_readme_shows'),
    'transunet models show abdomen-r50': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_share_a_trained_model_as_the_readme_shows'),
    'segment scan.nii.gz -o scan_labels.nii.gz --model abdomen-r50 --statistics --report': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_share_a_trained_model_as_the_readme_shows'),
    'transunet models remove abdomen-r50': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_share_a_trained_model_as_the_readme_shows'),
    'transunet export abdomen-r50 -o abdomen-r50.ts --format torchscript': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_share_a_trained_model_as_the_readme_shows'),
    'transunet export abdomen-r50 -o abdomen-r50.onnx --format onnx': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_export_for_deployment_as_the_readme_shows'),
    'transunet export abdomen-r50 -o abdomen-r50_bundle --format monai-bundle': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_export_for_deployment_as_the_readme_shows'),
    'python -m monai.bundle run --config_file abdomen-r50_bundle/configs/inference.json --meta_file abdomen-r50_bundle/configs/metadata.json --input_image scan.nii.gz --output_dir labels/': Exercise(
        "elsewhere", 'tests/packages/test_readme_share.py::test_export_for_deployment_as_the_readme_shows'),
    # -- hospital use: DICOM (run verbatim on a pydicom-written series)
    **{command: Exercise("elsewhere", "tests/outputs/test_readme_hospital.py::test_readme_hospital_commands",
                         why="run as shown in tests/outputs on a DICOM series the test writes")
       for command in (
           "segment ct_series/ -o out/ --checkpoint model.pt --output-type nifti,dicom-seg,rtstruct,seg-nrrd --preview",
           "segment ct_series/ -o out_subset/ --checkpoint model.pt --output-type dicom-seg,rtstruct "
           "--roi-subset liver,spleen,aorta",
           "transunet report --image ct_series/ --labels out/ct_series_seg.dcm -o ct_series_report.html")},
}

# The README's Python block, run as a script in the slow Synapse test (its weight file exists there).
PYTHON_BLOCKS = {
    'from transunet_app.models import build_model, list_models, load_pretrained\n'
    'model = build_model("R50-ViT-B_16", num_classes=9, img_size=224)   # (B, 1|3, H, W) -> (B, 9, H, W)\n'
    'report = load_pretrained(model, "R50+ViT-B_16.npz")   # format detected; loaded/skipped/missing listed\n'
    'print(report)\n': "test_synapse_prepare_train_segment_evaluate",
}


def readme_argv(command: str) -> list[str]:
    """The argv the test runs for a README command (substitutions and shrinking applied)."""
    shown = {c.text for c in readme_commands()[0]}
    assert command in shown or command in MAY_BE_ABSENT, f"README.md no longer shows {command!r}"
    ex = EXERCISED[command]
    assert ex.how in ("verbatim", "substituted"), command
    return substitute(command, ex.replacements, ex.extra)


def run_readme(command: str, cwd: Path, **kwargs):
    r = run_argv(readme_argv(command), cwd, env=_env(), **kwargs)
    assert r.returncode == 0, f"{command}\nexit {r.returncode}\n{r.stderr[-3000:]}"
    return r


def _env() -> dict:
    env = dict(os.environ)
    # one thread per process (shared CPU); the checkout importable whatever the install
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


# --------------------------------------------------------------------------- the map itself

def test_every_readme_command_is_mapped():
    commands, python_blocks = readme_commands()
    shown = {c.text for c in commands}
    assert len(shown) >= 20, "the README parser lost the commands"
    unmapped = sorted(shown - set(EXERCISED))
    assert not unmapped, ("README.md shows commands no test runs; add them to EXERCISED in "
                          f"{Path(__file__).name}: {unmapped}")
    stale = sorted(set(EXERCISED) - shown - MAY_BE_ABSENT)
    assert not stale, f"EXERCISED lists commands README.md no longer shows: {stale}"
    assert set(python_blocks) == set(PYTHON_BLOCKS), "README's Python blocks changed: update PYTHON_BLOCKS"


def test_map_entries_point_at_real_tests():
    this = sys.modules[__name__]
    for command, ex in EXERCISED.items():
        assert ex.how in ("verbatim", "substituted", "elsewhere"), command
        assert ex.how != "verbatim" or not (ex.replacements or ex.extra), command
        if "/" in ex.test:  # another file: a test function, or a script that must hold the command
            path, _, name = ex.test.partition("::")
            text = (ROOT / path).read_text(encoding="utf-8")
            if name:
                assert f"def {name}(" in text, f"{ex.test} (for {command!r}) does not exist"
            else:
                expect = command
                for old, new in ex.replacements:
                    expect = expect.replace(old, new)
                script = {c.text for c in parse_readme("```bash\n" + text + "\n```\n")[0]}
                assert expect in script, f"{path} does not run {expect!r}"
            continue
        func = getattr(this, ex.test, None)
        assert callable(func), f"{ex.test} (for {command!r}) is not a test of this file"
        if ex.how != "elsewhere":
            constant = next((k for k, v in vars(this).items()
                             if k.isupper() and isinstance(v, str) and v == command), None)
            src = inspect.getsource(func)
            assert command in src or _wrapped(command, func) or (constant and constant in src), \
                f"{ex.test} does not run {command!r}"
    for _block, test in PYTHON_BLOCKS.items():
        assert "PYTHON_BLOCKS" in inspect.getsource(getattr(this, test))


def _wrapped(command: str, func) -> bool:
    """The command's text appears in the function's source, possibly split over string literals."""
    src = inspect.getsource(func)
    joined = "".join(part for part in src.split('"')[1::2])
    return command in joined


def test_parser_handles_continuations_chains_comments_and_prompts():
    text = ("Intro with `transunet info` inline and `transunet` alone.\n\n"
            "```bash\n$ transunet prepare phantom \\\n    --out x   # a comment\n"
            "pip install -q a && transunet train --config c.yaml k=v\n```\n\n"
            "    segment a.nii.gz -o b.nii.gz   # indented block\n\n"
            "```python\nprint(1)\n```\n")
    commands, py = parse_readme(text)
    assert [c.text for c in commands] == [
        "transunet info", "transunet prepare phantom --out x", "pip install -q a",
        "transunet train --config c.yaml k=v", "segment a.nii.gz -o b.nii.gz"]
    assert py == ["print(1)\n"]


# --------------------------------------------------------------------------- fixtures (inputs)

@pytest.fixture
def workdir(tmp_path) -> Path:
    """A user's folder: ``model.pt`` (a tiny transunet_app checkpoint, random weights, 32x32
    input) and ``scan.nii.gz`` (a small phantom CT in HU)."""
    from transunet_app.checkpoint import save_checkpoint

    from .inference.conftest import small_phantom, tiny_checkpoint_dict

    save_checkpoint(tmp_path / "model.pt", tiny_checkpoint_dict())
    ph = small_phantom()
    save_nifti(tmp_path / "scan.nii.gz", ph.image, ph.affine)
    return tmp_path


def _label_map_matches_scan(labels: Path, scan: Path) -> np.ndarray:
    lab, img = nib.load(str(labels)), nib.load(str(scan))
    assert lab.shape == img.shape and np.allclose(lab.affine, img.affine)
    arr = np.asanyarray(lab.dataobj)
    assert arr.dtype == np.uint8
    return arr


# --------------------------------------------------------------------------- fast runs

def test_segment_a_scan_then_report(workdir):
    r = run_readme("segment scan.nii.gz -o scan_labels.nii.gz --checkpoint model.pt --statistics --report", workdir)
    assert "scan.nii.gz -> scan_labels.nii.gz" in r.stdout + r.stderr
    _label_map_matches_scan(workdir / "scan_labels.nii.gz", workdir / "scan.nii.gz")
    sidecar = json.loads((workdir / "scan_labels.json").read_text())
    assert sidecar["labels"]["5"] == "liver"
    stats = json.loads((workdir / "scan_labels_statistics.json").read_text())
    assert "liver" in json.dumps(stats)
    html = (workdir / "scan_labels_report.html").read_text(encoding="utf-8")
    assert "not a diagnosis" in html.lower()
    # provenance names the kept files, not the scratch copies the report was built from
    for row in ("<dt>CT image</dt><dd>scan.nii.gz</dd>", "<dt>Label map</dt><dd>scan_labels.nii.gz</dd>",
                "<dt>Label names from</dt><dd>scan_labels.json</dd>"):
        assert row in html

    r = run_readme("transunet report --image scan.nii.gz --labels scan_labels.nii.gz -o scan_report.html", workdir)
    assert "wrote scan_report.html" in r.stdout
    html = (workdir / "scan_report.html").read_text(encoding="utf-8")
    assert "<img" in html and "liver" in html.lower()


def test_segment_dicom_series_and_folder(workdir):
    from .inference.conftest import small_phantom

    ph = small_phantom(seed=8)
    write_dicom_series(sitk_from_ras(ph.image, ph.affine), workdir / "dicom_series_folder", "1.2.3.4.5")
    run_readme("segment dicom_series_folder/ -o labels/ --checkpoint model.pt", workdir)
    written = sorted(p.name for p in (workdir / "labels").glob("*.nii.gz"))
    assert len(written) == 1, written
    dicom_labels = nib.load(str(workdir / "labels" / written[0]))
    assert dicom_labels.shape == ph.image.shape  # same voxel grid as the series

    for seed in (9, 10):
        p = small_phantom(seed=seed)
        save_nifti(workdir / "scans" / f"case{seed:02d}.nii.gz", p.image, p.affine)
    r = run_readme("segment scans/ -o labels/ --checkpoint model.pt --jobs 2", workdir)
    for seed in (9, 10):
        _label_map_matches_scan(workdir / "labels" / f"case{seed:02d}.nii.gz",
                                workdir / "scans" / f"case{seed:02d}.nii.gz")
    assert "2 segmented" in r.stdout + r.stderr


def _write_preds_and_refs(folder: Path) -> None:
    """``refs/`` phantom label maps and ``preds/`` the same organs with a one-voxel erosion and
    one case missing the gallbladder (a known Dice below 1)."""
    from scipy import ndimage as ndi

    from .inference.conftest import small_phantom

    for seed in (3, 4):
        ph = small_phantom(seed=seed, noise=False)
        pred = np.where(ndi.binary_erosion(ph.labels > 0), ph.labels, 0).astype(np.uint8)
        if seed == 4:
            pred[pred == 2] = 0
        save_nifti(folder / "refs" / f"case{seed}.nii.gz", ph.labels, ph.affine)
        save_nifti(folder / "preds" / f"case{seed}.nii.gz", pred, ph.affine)


def test_evaluate_both_conventions_then_dataset_report(tmp_path):
    _write_preds_and_refs(tmp_path)
    run_readme("transunet evaluate --pred preds/ --gt refs/ -o metrics.json --csv metrics.csv", tmp_path)
    strict = json.loads((tmp_path / "metrics.json").read_text())
    assert strict["convention"] == "strict" and strict["hd95_unit"] == "mm"
    assert [c["case"] for c in strict["cases"]] == ["case3", "case4"]
    assert 0.3 < strict["summary"]["mean"]["dice"] < 1.0
    assert strict["cases"][1]["organs"]["gallbladder"]["status"] == "missed"
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("case,organ,") and len(rows) == 1 + 2 * 8

    run_readme("transunet evaluate --pred preds/ --gt refs/ -o paper.json --convention transunet", tmp_path)
    paper = json.loads((tmp_path / "paper.json").read_text())
    assert paper["convention"] == "transunet" and paper["hd95_unit"] == "voxel"
    # the official rule: a missed organ scores Dice 0 and counts in the mean (strict leaves HD95 out)
    assert paper["cases"][1]["organs"]["gallbladder"]["dice"] == 0.0

    run_readme("transunet report --metrics metrics.json -o evaluation_report.html", tmp_path)
    html = (tmp_path / "evaluation_report.html").read_text(encoding="utf-8")
    assert "case3" in html and "gallbladder" in html.lower() and "<img" in html


def test_prepare_folder(tmp_path):
    from .inference.conftest import small_phantom

    names = ["a", "b", "c"]
    for i, n in enumerate(names):
        ph = small_phantom(seed=20 + i)
        save_nifti(tmp_path / "msd" / "imagesTr" / f"{n}.nii.gz", ph.image, ph.affine)
        save_nifti(tmp_path / "msd" / "labelsTr" / f"{n}.nii.gz", (ph.labels == 5).astype(np.uint8), ph.affine)
    (tmp_path / "msd" / "dataset.json").write_text(json.dumps({
        "name": "liver", "labels": {"0": "background", "1": "liver"},
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names]}))
    run_readme("transunet prepare folder --src DIR --out DIR", tmp_path)
    out = tmp_path / "prepared"
    assert (out / "dataset.yaml").is_file()
    train = (out / "lists_Synapse" / "train.txt").read_text().split()
    test = (out / "lists_Synapse" / "test_vol.txt").read_text().split()
    assert len(test) == 1 and len(train) == 2 * 10  # 2 training cases of 10 slices
    assert all((out / "train_npz" / f"{s}.npz").is_file() for s in train)


def test_info_lists_every_backbone(tmp_path):
    from transunet_app.models import list_models

    r = run_readme("transunet info", tmp_path)
    for name in list_models():
        assert name in r.stdout, name


def test_bench_model_prints_the_table(tmp_path):
    r = run_argv(readme_argv("python tools/bench/bench_model.py --batches 8 --rounds 3 --modes fp32 bf16-inference"), ROOT, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| tiny ")]
    assert len(rows) == 1 and "| fp32 | 8 |" in rows[0], r.stdout


# --------------------------------------------------------------------------- Synapse, end to end (slow)

# BTCV raw label ids of the Synapse classes 0..8 (inverse of datasets/synapse/labels.yaml's map).
SYNAPSE_TO_BTCV = np.array([0, 8, 4, 3, 2, 6, 11, 1, 7], dtype=np.uint8)


def _write_btcv_download(abdomen: Path) -> None:
    """``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz`` (BTCV's 13 ids) for case 1 (official
    test split) and cases 5, 6 (training split): small phantoms, 40 voxels across, 6 slices."""
    from transunet_app.data.phantom import make_phantom

    for n in (1, 5, 6):
        ph = make_phantom((11, n), matrix=40, slices=6)
        save_nifti(abdomen / "img" / f"img{n:04d}.nii.gz", ph.image, ph.affine)
        save_nifti(abdomen / "label" / f"label{n:04d}.nii.gz", SYNAPSE_TO_BTCV[ph.labels], ph.affine)


@pytest.mark.slow
def test_synapse_prepare_train_segment_evaluate(tmp_path):
    """README "Train on Synapse" and "Multi-GPU", in order, with R50-ViT-B_16 and a Google-schema
    ImageNet-21k .npz (random values, the official key names and shapes, 459 MB)."""
    import torch

    from transunet_app.checkpoint import load_checkpoint
    from transunet_app.testing import golden, google_npz

    work = tmp_path
    _write_btcv_download(work / "data" / "Abdomen")
    google_npz.write_npz(work / "R50+ViT-B_16.npz", hybrid=True)
    # the config's own model.pretrained path, used by the torchrun command (no override there)
    (work / "pretrained" / "imagenet21k").mkdir(parents=True)
    os.link(work / "R50+ViT-B_16.npz", work / "pretrained" / "imagenet21k" / "R50+ViT-B_16.npz")
    # README's commands run from the checkout (configs/...): link it in
    for folder in ("configs",):
        (work / folder).symlink_to(ROOT / folder, target_is_directory=True)

    # README's Python block (see PYTHON_BLOCKS): build R50-ViT-B_16 and load the .npz
    (block,) = [b for b, t in PYTHON_BLOCKS.items() if t == "test_synapse_prepare_train_segment_evaluate"]
    r = run_argv(["python", "-c", block], work, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Google ViT .npz, loaded" in r.stdout and "skipped 3" in r.stdout, r.stdout

    run_readme("transunet prepare synapse --raw /data/Abdomen --out /data/Synapse", work)
    prepared = work / "data" / "Synapse"
    assert (prepared / "lists_Synapse" / "test_vol.txt").read_text().split() == ["case0001"]
    train_slices = (prepared / "lists_Synapse" / "train.txt").read_text().split()
    assert len(train_slices) == 12 and train_slices[0].startswith("case0005_slice")
    assert (prepared / "test_vol_h5" / "case0001.npy.h5").is_file()

    r = run_readme("transunet train --config configs/synapse_r50_vit_b16.yaml --output runs/r50 data.root=/data/Synapse model.pretrained=R50+ViT-B_16.npz", work)
    assert "best checkpoint: runs/r50/checkpoints/best.pt" in r.stdout
    run = work / "runs" / "r50"
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert "loaded 305 tensors" in next(e for e in log if e.get("event") == "pretrained")["summary"]
    assert [e["iteration"] for e in log if "loss" in e and "iteration" in e] == [1, 2]
    config = (run / "config.yaml").read_text()
    assert "R50-ViT-B_16" in config and "img_size: 32" in config

    # `tensorboard --logdir runs/r50` reads these with this reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = run.rglob("events.out.tfevents*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    assert any("loss" in tag for tag in acc.Tags()["scalars"]), acc.Tags()

    r = run_readme("torchrun --nproc_per_node 4 -m transunet_app train --config configs/synapse_r50_vit_b16.yaml --output runs/r50 data.root=/data/Synapse", work)
    ddp_log = [json.loads(ln) for ln in (work / "runs" / "r50_ddp" / "log.jsonl").read_text().splitlines()]
    assert next(e for e in ddp_log if e.get("event") == "start")["world_size"] == 2
    # two iterations in one epoch: last.pt written once, so no previous.pt to keep
    assert sorted(p.name for p in (work / "runs" / "r50_ddp" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]

    shown = {c.text for c in readme_commands()[0]}
    segment_commands = [c for c in (SEGMENT_ALL_SCANS, SEGMENT_TEST_CASES) if c in shown]
    assert len(segment_commands) == 1, "README must show one of the two Synapse segment commands"
    run_readme(segment_commands[0], work)
    segmented = (1, 5, 6) if segment_commands[0] == SEGMENT_ALL_SCANS else (1,)
    assert sorted(p.name for p in (work / "preds").glob("*.nii.gz")) == [f"img{n:04d}.nii.gz" for n in segmented]
    for n in segmented:
        _label_map_matches_scan(work / "preds" / f"img{n:04d}.nii.gz",
                                work / "data" / "Abdomen" / "img" / f"img{n:04d}.nii.gz")

    r = run_readme(MAKE_REFS, work)  # the official test cases of the download: case 1 here
    assert sorted(p.name for p in (work / "refs").iterdir()) == ["img0001.nii.gz"]
    r = run_readme("transunet evaluate --pred preds/ --gt refs/ -o metrics.json --convention transunet", work)
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["convention"] == "transunet" and [c["case"] for c in metrics["cases"]] == ["img0001"]
    assert metrics["organs"] == ["aorta", "gallbladder", "left kidney", "right kidney", "liver", "pancreas",
                                 "spleen", "stomach"]
    assert "mean of organs" in r.stdout

    # an official-trainer R50-ViT-B_16 state dict (nn.DataParallel keys) -> a segment checkpoint
    schema = golden.load_golden(ROOT / "tests" / "fidelity" / "golden" / "transunet_r50_vit_b16_pth.npz")["schema"]
    torch.save({"module." + k: v for k, v in golden.official_like_state(schema, 0, torch.float32).items()},
               work / "epoch_149.pth")
    run_readme("transunet convert epoch_149.pth -o transunet_synapse.pt --model R50-ViT-B_16", work)
    ckpt = load_checkpoint(work / "transunet_synapse.pt")
    assert ckpt["model"]["name"] == "R50-ViT-B_16" and ckpt["classes"][5] == "liver"
