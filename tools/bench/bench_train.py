"""Training throughput vs a loop that mirrors the official TransUNet trainer, side by side.

Three loops train R50-ViT-B_16 at batch 8 on 512x512 slices (the Synapse in-plane size; made
from the real CT sample in ../shared/data, or a phantom when it is absent), interleaved
iteration by iteration so that they share the machine's load equally:

* ``reference``: the official ``trainer_synapse`` recipe: ``RandomGenerator`` (scipy rot90/flip or
  ``ndimage.rotate``, cubic ``zoom`` to 224) per sample, fp32 NCHW model, CE + the official
  per-class Python-loop ``DiceLoss``, SGD with the official poly lr. The model is this
  project's in fp32 NCHW with torch's ``nn.Dropout``, or with ``--official DIR`` the official
  network itself from a local checkout of Beckschen/TransUNet (development only; nothing of it
  is in this repository), all loops starting from the official network's seeded weights;
* ``engine fp32``: this package's loader (tensor augmentation) and train step, without autocast;
* ``engine bf16`` (the default on CPUs with AMX): the same with bf16 autocast and channels_last.

Every iteration each loop loads its own batch through its own pipeline (timed: the loader
cost), but the training step of all three runs on the SAME batch (the engine's), from the same
initial weights, so their losses can be compared batch by batch: fp32 must agree with the
reference to float rounding, bf16 within a tolerance. samples/s = batch / (load + step).

Dropout: the reference uses torch's ``nn.Dropout`` (as the official model), the engine this
package's cheaper CPU dropout (``fast_layers.dropout``), so their masks differ. The first
``--agree-iterations`` therefore run with every dropout off (same weights, same batch: equal
losses expected); the timed iterations that follow run the recipe as it is, dropout 0.1 on.

    python tools/bench/bench_train.py                 # throughput + loss agreement (long on a CPU)
    python tools/bench/bench_train.py --official DIR  # reference trains the official network
    python tools/bench/bench_train.py --iterations 2 --warmup 1
    python tools/bench/bench_train.py --learning-check-only

``--learning-check`` also trains configs/real_ct_learning.yaml on the 30 slices of the real CT
and reports the mean Dice over the 8 organs and the CPU time it took
(:mod:`transunet_app.engine.learning_check`).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "data"
sys.path.insert(0, str(REPO))


# --------------------------------------------------------------------------- official mirror


def random_rot_flip(image, label):
    k = np.random.randint(0, 4)
    image = np.rot90(image, k)
    label = np.rot90(label, k)
    axis = np.random.randint(0, 2)
    image = np.flip(image, axis=axis).copy()
    label = np.flip(label, axis=axis).copy()
    return image, label


def random_rotate(image, label):
    from scipy import ndimage

    angle = np.random.randint(-20, 20)
    image = ndimage.rotate(image, angle, order=0, reshape=False)
    label = ndimage.rotate(label, angle, order=0, reshape=False)
    return image, label


class RandomGenerator:
    """datasets/dataset_synapse.py of the official code."""

    def __init__(self, output_size):
        self.output_size = output_size

    def __call__(self, sample):
        from scipy.ndimage import zoom

        image, label = sample["image"], sample["label"]
        if random.random() > 0.5:
            image, label = random_rot_flip(image, label)
        elif random.random() > 0.5:
            image, label = random_rotate(image, label)
        x, y = image.shape
        if x != self.output_size[0] or y != self.output_size[1]:
            image = zoom(image, (self.output_size[0] / x, self.output_size[1] / y), order=3)
            label = zoom(label, (self.output_size[0] / x, self.output_size[1] / y), order=0)
        image = torch.from_numpy(image.astype(np.float32)).unsqueeze(0)
        label = torch.from_numpy(label.astype(np.float32))
        return {"image": image, "label": label.long()}


class SynapseDatasetOfficial(torch.utils.data.Dataset):
    def __init__(self, base_dir, names, transform):
        self.base_dir, self.names, self.transform = Path(base_dir), names, transform

    def __len__(self):
        return len(self.names)

    def __getitem__(self, idx):
        data = np.load(self.base_dir / f"{self.names[idx]}.npz")
        return self.transform({"image": data["image"], "label": data["label"]})


class OfficialDiceLoss(torch.nn.Module):
    """utils.DiceLoss of the official code."""

    def __init__(self, n_classes):
        super().__init__()
        self.n_classes = n_classes

    def forward(self, inputs, target):
        inputs = torch.softmax(inputs, dim=1)
        target = torch.cat([(target == i).unsqueeze(1) for i in range(self.n_classes)], dim=1).float()
        loss = 0.0
        for i in range(self.n_classes):
            score, t = inputs[:, i], target[:, i]
            intersect = torch.sum(score * t)
            y_sum = torch.sum(t * t)
            z_sum = torch.sum(score * score)
            loss += 1 - (2 * intersect + 1e-5) / (z_sum + y_sum + 1e-5)
        return loss / self.n_classes


# --------------------------------------------------------------------------- data


def make_slices(out: Path, n: int = 24, size: int = 512) -> list[str]:
    """Write ``n`` official-layout training slices of ``size``^2 (real CT resampled, or phantom)."""
    from scipy.ndimage import zoom

    from transunet_app.data.intensity import window_to_unit

    if (SHARED / "ct_abdomen_3mm.nii.gz").exists():
        import nibabel as nib

        ct = np.asarray(nib.load(str(SHARED / "ct_abdomen_3mm.nii.gz")).dataobj, dtype=np.float32)
        lab = np.asarray(nib.load(str(SHARED / "ct_abdomen_3mm_labels.nii.gz")).dataobj, dtype=np.uint8)
        src = "real CT sample resampled to 512x512"
    else:
        from transunet_app.data.phantom import make_phantom

        ph = make_phantom(0, matrix=128, slices=30)
        ct, lab = ph.image.astype(np.float32), ph.labels
        src = "phantom resampled to 512x512"
    (out / "train_npz").mkdir(parents=True, exist_ok=True)
    names = []
    depth = ct.shape[2]
    for i in range(n):
        z = int(i * depth / n)
        img2, lab2 = ct[:, :, z], lab[:, :, z]
        f = (size / img2.shape[0], size / img2.shape[1])
        image = window_to_unit(zoom(img2, f, order=1))
        label = zoom(lab2, f, order=0).astype(np.uint8)
        name = f"case0001_slice{i:03d}"
        np.savez(out / "train_npz" / f"{name}.npz", image=image, label=label)
        names.append(name)
    (out / "lists_Synapse").mkdir(exist_ok=True)
    (out / "lists_Synapse" / "train.txt").write_text("\n".join(names) + "\n")
    (out / "dataset.yaml").write_text(json.dumps({"classes": ["background", "aorta", "gallbladder", "left kidney",
                                                               "right kidney", "liver", "pancreas", "spleen",
                                                               "stomach"], "source": {"kind": src}}))
    return names


# --------------------------------------------------------------------------- loops


def torch_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Swap this package's dropout layers for ``torch.nn.Dropout`` (the official model's)."""
    from transunet_app.fast_layers.dropout import BitsDropout as Dropout

    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, Dropout):
                setattr(parent, name, torch.nn.Dropout(child.p))
    return model


def set_dropout(model: torch.nn.Module, on: bool) -> None:
    """Turn every dropout layer off (p = 0, the rate kept aside) or back on."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            if not on and not hasattr(m, "bench_p"):
                m.bench_p, m.p = m.p, 0.0
            elif on and hasattr(m, "bench_p"):
                m.p = m.bench_p
                del m.bench_p


def check_dropout() -> int:
    """``--check-dropout``: the reference's dropout on the tiny model is torch's ``nn.Dropout``
    (none of this package's left), :func:`set_dropout` makes the forward deterministic and
    restores every rate. Exit code 0 when all holds, 1 with the reason on stderr otherwise."""
    from transunet_app.fast_layers import use_training_fast_paths
    from transunet_app.fast_layers.dropout import BitsDropout as Dropout
    from transunet_app.models import build_model

    model = build_model("tiny", 9, img_size=32)
    use_training_fast_paths(model)  # as the Trainer builds it: this package's dropout in
    model = torch_dropout(model).train()
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    rates = [m.p for m in drops]
    x = torch.rand(2, 1, 32, 32)
    problems = []
    if not drops or any(isinstance(m, Dropout) for m in drops):
        problems.append("the model's dropout layers are not all torch.nn.Dropout")
    if not rates or max(rates) != 0.1:
        problems.append(f"dropout rates {rates}, expected the recipe's 0.1")
    set_dropout(model, on=False)
    if not torch.equal(model(x), model(x)):
        problems.append("dropout switched off, yet two forwards differ")
    set_dropout(model, on=True)
    if [m.p for m in drops] != rates:
        problems.append("rates not restored after switching dropout back on")
    if torch.equal(model(x), model(x)):
        problems.append("dropout back on, yet two forwards are equal")
    if problems:
        print("dropout check failed: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"dropout check: ok ({len(drops)} torch.nn.Dropout layers, max rate {max(rates)})")
    return 0


class Loop:
    """One training loop: its own loader, model copy, optimizer and step function."""

    def __init__(self, name, loader, model, step, lr_at):
        self.name, self.loader, self.model, self.step, self.lr_at = name, loader, model, step, lr_at
        self.it = iter(loader)
        self.load_s, self.step_s, self.losses = [], [], []

    def next_batch(self):
        t = time.perf_counter()
        try:
            batch = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            batch = next(self.it)
        self.load_s.append(time.perf_counter() - t)
        return batch


def official_init(repo: str, img_size: int) -> tuple[torch.nn.Module, dict]:
    """The official ``VisionTransformer`` from a local checkout of Beckschen/TransUNet (seeded
    init), and the same weights in this project's model (``load_pretrained`` of the official
    state dict, as a user converts an official checkpoint): every loop starts from them."""
    from bench_segment import build_official  # tools/bench, the script's folder

    from transunet_app.models import build_model, load_pretrained

    torch.manual_seed(1234)
    official = build_official(repo, img=img_size, num_classes=9)
    ours = build_model("R50-ViT-B_16", 9, img_size=img_size)
    with tempfile.TemporaryDirectory() as tmp:
        pth = Path(tmp) / "official.pth"
        torch.save(official.state_dict(), pth)
        report = load_pretrained(ours, pth)
    if report.missing:
        raise RuntimeError(f"official weights left tensors of ours at init: {report.missing[:3]}")
    return official, {k: v.clone() for k, v in ours.state_dict().items()}


def build_loops(data_root: Path, names: list[str], batch: int, img_size: int, max_iterations: int,
                official: str | None = None):
    from transunet_app.config import config_from_dict
    from transunet_app.data.datasets import SynapseSlices
    from transunet_app.data.transforms import SliceAugment
    from transunet_app.engine.data import AugmentedSlices, ResumableSampler, make_loader
    from transunet_app.engine.losses import DiceCELoss
    from transunet_app.engine.schedule import build_optimizer, build_scheduler
    from transunet_app.fast_layers import use_training_fast_paths
    from transunet_app.models import build_model

    if official:
        ref_model, init = official_init(official, img_size)
    else:
        torch.manual_seed(1234)
        base = build_model("R50-ViT-B_16", 9, img_size=img_size)
        init = {k: v.clone() for k, v in base.state_dict().items()}
        del base
        ref_model = torch_dropout(build_model("R50-ViT-B_16", 9, img_size=img_size))
        ref_model.load_state_dict(init)
    cfg = config_from_dict({"model": {"name": "R50-ViT-B_16"}, "data": {"root": str(data_root)}})
    base_lr = cfg.optim.lr

    # reference: official dataset/transform/loss/optimizer/lr
    random.seed(1234)
    np.random.seed(1234)
    ref_ds = SynapseDatasetOfficial(data_root / "train_npz", names, RandomGenerator([img_size, img_size]))
    ref_loader = torch.utils.data.DataLoader(ref_ds, batch_size=batch, shuffle=True, num_workers=0,
                                             generator=torch.Generator().manual_seed(0))
    ref_model.train()
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=base_lr, momentum=0.9, weight_decay=1e-4)
    ce, dice = torch.nn.CrossEntropyLoss(), OfficialDiceLoss(9)
    ref_iter = [0]

    def ref_step(image, label):
        outputs = ref_model(image)
        loss_ce = ce(outputs, label.long())
        loss_dice = dice(outputs, label)
        loss = 0.5 * loss_ce + 0.5 * loss_dice
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        lr_ = base_lr * (1.0 - ref_iter[0] / max_iterations) ** 0.9
        for g in ref_opt.param_groups:
            g["lr"] = lr_
        ref_iter[0] += 1
        ref_opt.zero_grad(set_to_none=True)  # free the gradients between interleaved loops
        return float(loss.detach())

    ref_name = "reference (official recipe" + (" and network" if official else "") + ", fp32, scipy loader)"
    loops = [Loop(ref_name, ref_loader, ref_model, ref_step, None)]

    slices = SynapseSlices(data_root, split="train")
    aug = SliceAugment(img_size)
    for label, amp in (("engine fp32", None), ("engine bf16 + channels_last", torch.bfloat16)):
        ds = AugmentedSlices(slices, aug, seed=1234)
        sampler = ResumableSampler(len(ds), seed=1234)
        loader = make_loader(ds, sampler, batch, num_workers=0)
        model = build_model("R50-ViT-B_16", 9, img_size=img_size)
        use_training_fast_paths(model)  # as the Trainer does
        model.load_state_dict(init)
        model.train()
        cl = amp is not None
        if cl:
            model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, "sgd", base_lr, 1e-4, 0.9)
        sched = build_scheduler(opt, max_iterations, "poly", 0.9, base_lr=base_lr)
        crit = DiceCELoss()

        def step(image, label, model=model, opt=opt, sched=sched, crit=crit, amp=amp, cl=cl):
            x = image.contiguous(memory_format=torch.channels_last) if cl else image
            with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                logits = model(x)
            loss, _ = crit(logits, label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        loops.append(Loop(label, loader, model, step, None))
    return loops


def throughput(args) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        names = make_slices(root, n=max(args.batch * 3, 24))
        # The lr schedule spans a long run (as in training), so a few steps barely move it.
        loops = build_loops(root, names, args.batch, args.img_size, max_iterations=13950,
                            official=args.official)
        agree = args.agree_iterations
        total = agree + args.warmup + args.iterations
        for i in range(total):
            for loop in loops:
                set_dropout(loop.model, on=i >= agree)
            batches = [loop.next_batch() for loop in loops]  # each pipeline's own batch: its loading cost
            image, label = batches[-1]["image"], batches[-1]["label"]  # the engine's batch feeds every step
            for loop in loops:
                torch.manual_seed(10_000 + i)
                t = time.perf_counter()
                loss = loop.step(image, label)
                loop.step_s.append(time.perf_counter() - t)
                loop.losses.append(loss)
            print(f"iteration {i + 1}/{total}: " + ", ".join(
                f"{lp.name.split(' (')[0]} {lp.step_s[-1]:.1f}s loss {lp.losses[-1]:.6f}" for lp in loops), flush=True)
    w = agree + args.warmup
    rows = []
    for loop in loops:
        load = float(np.mean(loop.load_s[w:]))
        step = float(np.mean(loop.step_s[w:]))
        rows.append({"loop": loop.name, "load_s": load, "step_s": step, "samples_per_s": args.batch / (load + step),
                     "loader_share": load / (load + step), "losses": loop.losses})
    ref = rows[0]
    for r in rows:
        r["speedup"] = r["samples_per_s"] / ref["samples_per_s"]
        pairs = list(zip(r["losses"], ref["losses"]))[:agree]
        r["max_rel_loss_diff"] = max((abs(a - b) / abs(b) for a, b in pairs), default=float("nan"))
    return {"batch": args.batch, "img_size": args.img_size, "threads": args.threads, "warmup": args.warmup,
            "agree_iterations": agree, "iterations": args.iterations, "rows": rows}


def loader_cost(args, batch: int = 24, batches: int = 3) -> dict:
    """Seconds per batch of ``batch`` 512x512 slices -> 224 for both pipelines (no model)."""
    from transunet_app.data.datasets import SynapseSlices
    from transunet_app.data.transforms import SliceAugment
    from transunet_app.engine.data import AugmentedSlices, ResumableSampler, make_loader

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        root = Path(tmp)
        names = make_slices(root, n=batch * batches)
        random.seed(0)
        np.random.seed(0)
        ref = torch.utils.data.DataLoader(SynapseDatasetOfficial(root / "train_npz", names,
                                                                 RandomGenerator([args.img_size] * 2)),
                                          batch_size=batch, shuffle=True, num_workers=0)
        ds = AugmentedSlices(SynapseSlices(root, split="train"), SliceAugment(args.img_size), seed=0)
        ours = make_loader(ds, ResumableSampler(len(ds), seed=0), batch, num_workers=0)
        out = {}
        for name, loader in (("reference (scipy)", ref), ("engine (tensors)", ours)):
            t = time.perf_counter()
            n = sum(1 for _ in loader)
            out[name] = (time.perf_counter() - t) / n
    return out


# --------------------------------------------------------------------------- learning check


def learning_check(args) -> dict:
    from transunet_app.engine.learning_check import learning_check as run_check

    return run_check(SHARED, args.overrides)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per loop")
    p.add_argument("--official", metavar="DIR",
                   help="a local checkout of the official TransUNet code: the reference then trains the "
                        "official network (same initial weights), not this project's model in fp32 NCHW")
    p.add_argument("--agree-iterations", type=int, default=2,
                   help="first iterations, dropout off, whose losses are compared (not timed)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--learning-check", action="store_true", help="also run the real-CT learning check")
    p.add_argument("--learning-check-only", action="store_true")
    p.add_argument("--loader-only", action="store_true",
                   help="only the loading cost of a batch of 24 (512x512 -> img-size) for both pipelines")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--check-dropout", action="store_true",
                   help="only check the reference loop's dropout handling on the tiny model and exit")
    p.add_argument("overrides", nargs="*", help="config overrides for the learning check")
    args = p.parse_args(argv)
    if args.check_dropout:
        return check_dropout()
    from transunet_app.inference.precision import bf16_hardware

    results = {"cpu_bf16": bf16_hardware(), "torch": torch.__version__}
    if args.loader_only:
        cost = loader_cost(args)
        results["loader_batch24_s"] = cost
        print("| pipeline | s per batch of 24 (512x512 -> %d) |\n|---|---|" % args.img_size)
        for k, v in cost.items():
            print(f"| {k} | {v:.3f} |")
    elif not args.learning_check_only:
        tp = throughput(args)
        results["throughput"] = tp
        print(f"\nR50-ViT-B_16, batch {tp['batch']}, {tp['img_size']}px, {tp['threads']} threads, "
              f"{tp['iterations']} timed iterations (dropout on) after {tp['agree_iterations']} loss-agreement "
              f"iterations (dropout off) and {tp['warmup']} warm-up (interleaved)")
        print("| loop | load s/batch | step s/batch | samples/s | vs reference | loader share "
              "| max rel. loss diff (dropout off) |")
        print("|---|---|---|---|---|---|---|")
        for r in tp["rows"]:
            print(f"| {r['loop']} | {r['load_s']:.3f} | {r['step_s']:.2f} | {r['samples_per_s']:.3f} | "
                  f"{r['speedup']:.2f}x | {100 * r['loader_share']:.1f}% | {r['max_rel_loss_diff']:.2e} |")
    if args.learning_check or args.learning_check_only:
        lc = learning_check(args)
        results["learning_check"] = lc
        if "skipped" in lc:
            print(f"\nlearning check skipped: {lc['skipped']}")
        else:
            print(f"\nlearning check (configs/real_ct_learning.yaml on the 30 real CT slices): mean Dice "
                  f"{lc['mean_dice']:.4f} in {lc['cpu_minutes']:.1f} CPU min ({lc['wall_minutes']:.1f} min wall)")
            print("| organ | Dice |\n|---|---|")
            for k, v in lc["per_organ"].items():
                print(f"| {k} | {v:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
