"""`transunet demo` end to end (slow): every step writes what it promises, and the tiny model
really learned the phantoms."""
import json
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, shared_data):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "transunet_app", "demo", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("run/checkpoints/best.pt", "metrics.json", "metrics.csv",
                 "evaluation_report.html", "scan_report.html", "segmentations/real_ct.nii.gz"):
        assert (out / name).exists(), name
    assert list((out / "run").rglob("events.out.tfevents*")), "no TensorBoard log"
    doc = json.loads((out / "metrics.json").read_text())
    printed = float(re.search(r"mean Dice on \d+ held-out phantoms: ([0-9.]+)", r.stdout).group(1))
    assert abs(printed - doc["summary"]["mean"]["dice"]) < 1e-3
    assert printed >= 0.75, r.stdout[-1500:]
    # the demo ships its model as a package, and the scans were segmented with --model on it
    assert (out / "model" / "tiny-demo.zip").is_file()
    import zipfile

    with zipfile.ZipFile(out / "model" / "tiny-demo.zip") as z:
        validation = json.loads(z.read("model.json"))["validation"]
    # the card's per-organ HD95 comes from the run's own validation, in mm (phantoms have spacing)
    assert "in mm" in validation["hd95_convention"]
    assert 0 <= validation["per_organ"]["liver"]["hd95"] < 20 and validation["mean_hd95"] > 0
    side = json.loads((out / "segmentations" / "real_ct.json").read_text())
    assert side["model_card"]["name"] == "tiny-demo" and side["model_card"]["weights_sha256"]
    html = (out / "scan_report.html").read_text()
    assert "not a diagnosis" in html.lower() and "liver" in html.lower()
    # a second run into the same folder is refused: nothing is overwritten silently
    r2 = subprocess.run([sys.executable, "-m", "transunet_app", "demo", "--out", str(out)],
                        capture_output=True, text=True)
    assert r2.returncode == 2 and "not empty" in r2.stderr and r2.stderr.count("\n") == 1
