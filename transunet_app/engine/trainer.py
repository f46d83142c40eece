"""The training loop: one process per device, exact resume, validation, checkpoints.

``train(config, output_dir, resume=False)`` is the entry point of ``transunet train`` and of the
demo. A run folder holds::

    config.yaml            the resolved config (written once; a resume checks it is unchanged)
    log.jsonl              per-iteration losses and lr, validation results, resume markers
    tensorboard/           losses, lr, per-organ validation Dice, image/label/prediction panels
    checkpoints/last.pt    weights + full training state (optimizer, scheduler, scaler, RNG,
                           sampler position), written atomically at epoch ends and every
                           ``train.checkpoint_every_iterations``
    checkpoints/previous.pt the last.pt before the latest save: ``--resume`` falls back to it
                           (with a warning naming both) when last.pt is truncated or corrupt
    checkpoints/best.pt    weights and metrics of the best validation mean Dice (no training
                           state; what ``segment`` uses)

Faults: each checkpoint save first checks the free space (the tensors' size) and writes to a
temporary file, so a full disk stops the run with one line naming the folder while last.pt
stays the previous, valid checkpoint (``--resume`` continues exactly from it). A NaN/Inf loss
stops the run before anything is saved, naming the iteration, the batch's slices and the last
good checkpoint.

Exact resume: the sample order of an epoch depends on (seed, epoch), each sample's augmentation
on (seed, epoch, index), and dropout on the saved RNG state, so a run restarted from
``last.pt`` repeats, batch for batch, what the uninterrupted run would have computed (bit for
bit on CPU in ``train.deterministic`` mode).
"""
from __future__ import annotations

import gc
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from .. import checkpoint as ckpt_mod
from ..config import Config, diff, dump_yaml, load_config, to_dict
from ..errors import CheckpointError, DistributedError, StorageError, UserError
from . import distributed as dist_mod
from . import rng
from .data import AugmentedSlices, ResumableSampler, make_loader, slice_volumes
from .losses import DiceCELoss
from .run_log import NullLog, RunLog, panel
from .schedule import build_optimizer, build_scheduler
from .validate import validate

CONFIG_NAME = "config.yaml"
CKPT_DIR = "checkpoints"
LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"
#: config keys that may change when a run is resumed (they do not affect the computation).
RESUMABLE_CHANGES = {"data.root", "data.num_workers", "log.tensorboard", "log.image_every", "log.progress",
                     "log.print_every", "val.batch_size", "train.checkpoint_every_iterations", "train.device"}


def warn(text: str) -> None:
    """A warning line on stderr (rank 0 only: every rank would print the same)."""
    import sys

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"train: warning: {text}", file=sys.stderr, flush=True)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.amp`` on ``device`` (None = full fp32)."""
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    from .. import capabilities

    return torch.bfloat16 if capabilities.native_bf16() else None


def amp_warning(mode: str, device: torch.device) -> str | None:
    """One line when ``train.amp`` asks for a type this device runs slowly (None otherwise):
    bf16 on a CPU without bf16 hardware, fp16 on any CPU. Training still runs (autocast on
    plain torch layers: correct, slower than fp32)."""
    from ..inference.precision import precision_warning

    if mode not in ("bf16", "fp16"):
        return None
    return precision_warning(mode, device, option=f"train.amp={mode}", instead="train.amp=auto")


class Trainer:
    """Builds everything from a :class:`~transunet_app.config.Config` and runs :meth:`fit`.

    Args:
        config: the run configuration.
        output_dir: run folder (created; must not hold another run unless ``resume``).
        resume: continue the run in ``output_dir`` from ``checkpoints/last.pt``.
    """

    def __init__(self, config: Config, output_dir: str | os.PathLike, resume: bool = False):
        self.cfg = config
        self.out = Path(output_dir)
        self.ctx = dist_mod.setup(config.train.device)
        try:
            self._check_output(resume)
            self._set_up_torch()
            # built in this order: the seeds make a run (and its resume) reproducible
            self._build_data()
            self._build_model(resume)
            self._build_optimisation()
            self._start_or_resume(resume)
        except BaseException:
            dist_mod.teardown(self.ctx)
            raise

    def _set_up_torch(self) -> None:
        """Threads, determinism, and the per-rank batch."""
        t = self.cfg.train
        if t.cpu_threads:
            torch.set_num_threads(t.cpu_threads)
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=self.ctx.device.type == "cuda")
            torch.backends.cudnn.benchmark = False
        elif self.ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if t.batch_size % self.ctx.world_size:
            raise UserError(f"train.batch_size={t.batch_size} is not divisible by the "
                            f"{self.ctx.world_size} processes")
        self.rank_batch = t.batch_size // self.ctx.world_size

    def _build_data(self) -> None:
        """Training slices, their sampler and loader, the schedule's length, validation volumes."""
        from ..data.datasets import SynapseSlices, SynapseVolumes
        from ..data.transforms import SliceAugment

        config, t = self.cfg, self.cfg.train
        slices = SynapseSlices(config.data.root, split=config.data.train_split)
        self.info = slices.info
        self.classes = list(self.info["classes"])
        k = config.model.num_classes or len(self.classes)
        if k != len(self.classes):
            raise UserError(f"model.num_classes={k} but {config.data.root} has {len(self.classes)} classes "
                            f"({', '.join(self.classes)})")
        aug = config.augment
        augment = SliceAugment(config.data.img_size, aug.enabled, aug.p_rot_flip, aug.p_rotate, aug.max_angle,
                               config.data.image_interpolation)
        self.train_set = AugmentedSlices(slices, augment, t.seed)
        self.sampler = ResumableSampler(len(slices), self.ctx.world_size, self.ctx.rank, seed=t.seed)
        self.loader = make_loader(self.train_set, self.sampler, self.rank_batch, config.data.num_workers,
                                  pin_memory=self.ctx.device.type == "cuda")
        self.iters_per_epoch = math.ceil(self.sampler.per_epoch / self.rank_batch)
        if t.max_iterations > 0:
            self.max_iterations = t.max_iterations
        else:
            self.max_iterations = t.max_epochs * self.iters_per_epoch
        self.max_epochs = math.ceil(self.max_iterations / self.iters_per_epoch)
        self.val_volumes = None
        if config.val.source != "none" and config.val.every_epochs > 0 and self.ctx.is_main:
            if config.val.source == "volumes":
                self.val_volumes = SynapseVolumes(config.data.root, split=config.val.split)
            else:
                self.val_volumes = slice_volumes(SynapseSlices(config.data.root, split=config.val.split))
            if len(self.val_volumes) == 0:
                raise UserError(f"{config.data.root}: validation split '{config.val.split}' is empty "
                                f"(set val.source=none to train without validation)")

    def _build_model(self, resume: bool) -> None:
        """The model (pretrained weights unless resuming), on its device, with the training
        fast layers, autocast type and DDP wrapper."""
        from ..fast_layers import use_training_fast_paths
        from ..models import build_model, load_pretrained

        config, t = self.cfg, self.cfg.train
        k = len(self.classes)
        torch.manual_seed(t.seed)
        m = config.model
        try:
            model = build_model(m.name, k, img_size=config.data.img_size, **m.overrides)
        except (TypeError, ValueError) as exc:
            raise UserError(f"model: cannot build {m.name!r}: {exc}") from None
        # The one place training switches on the fast layers (15-bit dropout, channels-last
        # GroupNorm with its own backward, explicit attention products): same parameters.
        use_training_fast_paths(model)
        self.pretrained_report = None
        if m.pretrained and not resume:
            try:
                self.pretrained_report = load_pretrained(model, m.pretrained)
            except UserError as exc:
                raise UserError(f"model.pretrained: {exc} (set model.pretrained=null to train from "
                                f"scratch)") from None
        # Dropout streams differ per rank (different data); rank 0 keeps the seed itself.
        torch.manual_seed(t.seed + self.ctx.rank)
        model.to(self.ctx.device)
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.amp_dtype = resolve_amp(t.amp, self.ctx.device)
        note = amp_warning(t.amp, self.ctx.device)
        if note and self.ctx.is_main:
            print(f"train: warning: {note}", file=sys.stderr, flush=True)
        self.ddp = None
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)

    def _build_optimisation(self) -> None:
        """Optimiser, learning-rate schedule, gradient scaler and loss."""
        config = self.cfg
        o, s = config.optim, config.schedule
        self.optimizer = build_optimizer(self.model, o.name, o.lr, o.weight_decay, o.momentum, o.nesterov, o.betas,
                                         o.eps, o.no_decay_norm_bias)
        warmup = int(round(s.warmup_epochs * self.iters_per_epoch))
        self.scheduler = build_scheduler(self.optimizer, self.max_iterations, s.name, s.power, warmup,
                                         s.min_lr, o.lr)
        self.scaler = torch.amp.GradScaler(self.ctx.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.criterion = DiceCELoss(config.loss.ce_weight, config.loss.dice_weight)

    def _start_or_resume(self, resume: bool) -> None:
        """Counters at zero, or the last checkpoint's state; the run log."""
        config = self.cfg
        self.iteration = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_metric = -math.inf
        self.best_iteration = -1
        self.val_history: list[dict] = []
        self.resumed_from = None
        self.saved_iteration = 0  # iteration of the newest valid last.pt (0: none yet)
        self._pending_error: str | None = None
        if resume:
            self._load_last()
        self.log = NullLog()
        if self.ctx.is_main:
            self._write_config()
            self.log = RunLog(self.out, config.log.tensorboard,
                              purge_step=self.iteration + 1 if self.resumed_from else None)
            if self.resumed_from:
                self.log.line({"event": "resume", "iteration": self.iteration, "from": str(self.resumed_from)})
            else:
                if self.pretrained_report is not None:
                    self.log.line({"event": "pretrained", "summary": self.pretrained_report.summary()})
                self.log.line({"event": "start", "max_iterations": self.max_iterations,
                               "iters_per_epoch": self.iters_per_epoch, "world_size": self.ctx.world_size,
                               "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                               "device": str(self.ctx.device)})

    # ------------------------------------------------------------------ run folder

    def _check_output(self, resume: bool) -> None:
        has_run = (self.out / CONFIG_NAME).exists() or (self.out / CKPT_DIR / LAST).exists()
        if resume:
            if not self.out.is_dir():
                raise UserError(f"{self.out}: no run to resume (folder does not exist)")
            saved = self.out / CONFIG_NAME
            if saved.exists():
                changed = [k for k in diff(load_config(saved), self.cfg) if k not in RESUMABLE_CHANGES]
                if changed:
                    raise UserError(f"{saved}: the config differs from the run being resumed in "
                                    f"{', '.join(changed)}; resume with the saved config or start a new --output")
        elif has_run:
            raise UserError(f"{self.out}: already holds a training run; use --resume to continue it "
                            f"or choose another --output")
        if self.ctx.is_main:
            (self.out / CKPT_DIR).mkdir(parents=True, exist_ok=True)
        dist_mod.barrier(self.ctx)

    def _write_config(self) -> None:
        from ..data.files import atomic_write_text

        atomic_write_text(self.out / CONFIG_NAME, dump_yaml(self.cfg), overwrite=True)

    @property
    def last_path(self) -> Path:
        return self.out / CKPT_DIR / LAST

    @property
    def best_path(self) -> Path:
        return self.out / CKPT_DIR / BEST

    # ------------------------------------------------------------------ checkpoints

    def _preprocessing(self) -> dict:
        s = self.cfg.data.img_size
        return {"in_channels": 1, "img_size": [s, s], "hu_window": [float(v) for v in self.info["hu_window"]],
                "normalization": "window_to_unit", "orientation": str(self.info.get("orientation", "SPL")),
                "slice_axis": "axial", "interpolation": self.cfg.data.image_interpolation}

    def _training_state(self) -> dict:
        rng_states = dist_mod.gather_objects(self.ctx, rng.capture())
        return {
            "iteration": self.iteration, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "max_iterations": self.max_iterations, "iters_per_epoch": self.iters_per_epoch,
            "world_size": self.ctx.world_size, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng_states,
            "best_metric": self.best_metric if math.isfinite(self.best_metric) else None,
            "best_iteration": self.best_iteration, "val_history": self.val_history,
        }

    def _dataset_record(self) -> dict:
        return {"root": str(self.cfg.data.root), "name": self.info.get("name"),
                "synthetic": bool(self.info.get("synthetic", False))}

    def save_last(self) -> None:
        """Write ``last.pt``, keeping the one it replaces as ``previous.pt`` (all ranks must
        call: RNG states and buffers are gathered).

        Raises:
            StorageError: not enough space or the write failed; last.pt is still the previous
                checkpoint (iteration ``self.saved_iteration``), training state untouched.
        """
        dist_mod.broadcast_buffers(self.ctx, self.model)
        state = self._training_state()
        error, self._pending_error = self._pending_error, None  # best.pt failed just before
        if self.ctx.is_main and error is None:
            ck = ckpt_mod.make_checkpoint(self.model, self.classes, preprocessing=self._preprocessing(),
                                          training=state, metrics=self._latest_metrics(),
                                          config={**to_dict(self.cfg), "dataset": self._dataset_record()})
            try:
                ckpt_mod.save_checkpoint(self.last_path, ck, overwrite=True,
                                         keep_previous=self.last_path.with_name(PREVIOUS))
            except StorageError as exc:
                error = str(exc)
        # every rank learns whether rank 0 saved: all stop together instead of hanging
        error = dist_mod.gather_objects(self.ctx, error)[0]
        if error is not None:
            kept = (f"resume continues from iteration {self.saved_iteration}" if self.saved_iteration
                    else "no checkpoint of this run yet")
            raise StorageError(f"{error}; training stopped at iteration {self.iteration} ({kept} "
                               f"with --resume --output {self.out} once there is space)")
        self.saved_iteration = self.iteration

    def _save_best(self, metrics: dict) -> None:
        ck = ckpt_mod.make_checkpoint(self.model, self.classes, preprocessing=self._preprocessing(),
                                      metrics={**metrics, "iteration": self.iteration, "epoch": self.epoch},
                                      config={**to_dict(self.cfg), "dataset": self._dataset_record()})
        ckpt_mod.save_checkpoint(self.best_path, ck, overwrite=True)

    def _latest_metrics(self) -> dict | None:
        return self.val_history[-1] if self.val_history else None

    def _load_last(self) -> None:
        candidates = [p for p in (self.last_path, self.last_path.with_name(PREVIOUS)) if p.exists()]
        if not candidates:
            # Killed before its first checkpoint: start over in the same folder.
            return
        failures = []
        for path in candidates:
            try:
                ck = ckpt_mod.load_checkpoint(path)
            except UserError as exc:
                failures.append(str(exc))
                continue
            break
        else:
            raise CheckpointError(f"{self.out / CKPT_DIR}: no valid checkpoint to resume from "
                                  f"({'; '.join(failures)})")
        if failures:
            warn(f"{failures[0]}; resuming from {path} (iteration "
                 f"{(ck.get('training') or {}).get('iteration')}) instead")
        try:
            self.model.load_state_dict(ck["state_dict"], strict=True)
        except RuntimeError as exc:
            raise UserError(f"{path}: weights do not fit the configured model ({str(exc).splitlines()[0]})") from None
        st = ck.get("training")
        if not st:
            raise UserError(f"{path}: has no training state to resume from")
        if st["iters_per_epoch"] != self.iters_per_epoch or st["world_size"] != self.ctx.world_size:
            raise UserError(f"{path}: saved with {st['world_size']} process(es) and {st['iters_per_epoch']} "
                            f"iterations per epoch; now {self.ctx.world_size} and {self.iters_per_epoch} "
                            f"(same data, batch size and process count are needed to resume)")
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        if st["scaler"]:
            self.scaler.load_state_dict(st["scaler"])
        rng.restore(st["rng"][self.ctx.rank])
        self.iteration, self.epoch, self.batch_in_epoch = st["iteration"], st["epoch"], st["batch_in_epoch"]
        self.best_metric = st["best_metric"] if st["best_metric"] is not None else -math.inf
        self.best_iteration = st["best_iteration"]
        self.val_history = list(st["val_history"])
        self.resumed_from = path
        self.saved_iteration = self.iteration

    # ------------------------------------------------------------------ loop

    @property
    def net(self) -> torch.nn.Module:
        """What the forward pass goes through (the DDP wrapper when distributed)."""
        return self.ddp if self.ddp is not None else self.model

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype)

    def train_step(self, image: torch.Tensor, label: torch.Tensor):
        """One optimisation step on a batch; returns ``(loss, parts, logits)`` (detached)."""
        dev = self.ctx.device
        x = image.to(dev, non_blocking=True)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = label.to(dev, non_blocking=True)
        with self._autocast():
            logits = self.net(x)
        loss, parts = self.criterion(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach(), parts, logits.detach()

    def fit(self) -> Path:
        """Train to ``max_iterations``; returns the path of the best (or last) checkpoint."""
        from tqdm import tqdm

        cfg = self.cfg
        self.model.train()
        bar = tqdm(total=self.max_iterations, initial=self.iteration, unit="it", dynamic_ncols=True,
                   disable=not (self.ctx.is_main and cfg.log.progress), desc="train")
        try:
            while self.iteration < self.max_iterations:
                self.sampler.set_position(self.epoch, self.batch_in_epoch * self.rank_batch)
                t_data = time.perf_counter()
                for batch in self.loader:
                    t_step = time.perf_counter()
                    lr = self.optimizer.param_groups[0]["lr"]
                    loss, parts, logits = self.train_step(batch["image"], batch["label"])
                    self.iteration += 1
                    self.batch_in_epoch += 1
                    t_end = time.perf_counter()
                    self._log_iteration(loss, parts, lr, batch, logits, t_step - t_data, t_end - t_step, bar)
                    every = cfg.train.checkpoint_every_iterations
                    done = self.iteration >= self.max_iterations
                    if every and self.iteration % every == 0 and self.batch_in_epoch < self.iters_per_epoch \
                            and not done:
                        self.save_last()
                    if done:
                        break
                    t_data = time.perf_counter()
                epoch_done = self.batch_in_epoch >= self.iters_per_epoch
                finished = self.iteration >= self.max_iterations
                if epoch_done:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                if epoch_done or finished:
                    self._end_of_epoch(final=finished)
            bar.close()
            if self.ddp is not None:
                spread = dist_mod.replica_spread(self.ctx, self.model)
                self.log.line({"event": "replicas", "max_checksum_difference": spread})
            self.log.line({"event": "done", "iteration": self.iteration, "best": self.best_metric
                           if math.isfinite(self.best_metric) else None})
            dist_mod.barrier(self.ctx)  # no collective of any rank still in flight at teardown
        except Exception as exc:
            if not (self.ctx.distributed and dist_mod.is_peer_failure(exc)):
                raise
            first = str(exc).strip().splitlines()
            kept = (f"last checkpoint: {self.last_path} (iteration {self.saved_iteration})"
                    if self.saved_iteration else "no checkpoint saved yet")
            raise DistributedError(
                f"rank {self.ctx.rank}: lost contact with the other training processes at iteration "
                f"{self.iteration} ({type(exc).__name__}: {first[0][:160] if first else ''}); {kept}; "
                f"start all nodes again with --resume") from None
        finally:
            bar.close()
            self.log.close()
            # DDP's reducer holds the process group and its last gloo work objects: freed here,
            # while the interpreter is whole. Freed at interpreter exit instead, they aborted a
            # rank now and then ("terminate called without an active exception", SIGABRT), and
            # the other node's torchrun then waited in its exit barrier (tests/faults).
            self.ddp = None
            gc.collect()
            dist_mod.teardown(self.ctx)
        return self.best_path if self.best_path.exists() else self.last_path

    def _log_iteration(self, loss, parts, lr, batch, logits, data_s, step_s, bar) -> None:
        cfg = self.cfg
        values = dist_mod.mean_across(self.ctx, torch.stack([loss.float(), parts["ce"], parts["dice"]]).cpu())
        loss_v, ce_v, dice_v = (float(v) for v in values)
        if not math.isfinite(loss_v):
            self._stop_on_non_finite(loss_v, batch)
        if not self.ctx.is_main:
            return
        bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.2e}", epoch=self.epoch, refresh=False)
        bar.update(1)
        it = self.iteration
        if it % cfg.log.print_every == 0:
            self.log.line({"iteration": it, "epoch": self.epoch, "loss": loss_v, "ce": ce_v, "dice": dice_v,
                           "lr": lr, "data_s": round(data_s, 4), "step_s": round(step_s, 4)})
        self.log.scalars(it, {"loss": loss_v, "loss_ce": ce_v, "loss_dice": dice_v}, prefix="train/")
        total = data_s + step_s
        self.log.scalars(it, {"lr": lr, "samples_per_s": self.cfg.train.batch_size / max(total, 1e-9),
                              "data_fraction": data_s / max(total, 1e-9)}, prefix="info/")
        if cfg.log.image_every and it % cfg.log.image_every == 0:
            pred = logits[0].float().argmax(0).cpu().numpy()
            self.log.image("train/panel", it, panel(batch["image"][0, 0].numpy(), batch["label"][0].numpy(), pred))

    def _stop_on_non_finite(self, loss_v: float, batch) -> None:
        """NaN/Inf loss: stop before any checkpoint holds the weights it produced, naming the
        iteration, every rank's slices in the batch and the last good checkpoint."""
        names_of = getattr(self.train_set.slices, "names", None)
        mine = [str(names_of[int(i)]) if names_of is not None else str(int(i)) for i in batch["index"]]
        names = [n for rank_names in dist_mod.gather_objects(self.ctx, mine) for n in rank_names]
        shown = ", ".join(names[:16]) + (f" and {len(names) - 16} more" if len(names) > 16 else "")
        last = (f"last good checkpoint: {self.last_path} (iteration {self.saved_iteration})"
                if self.saved_iteration else "no checkpoint saved yet")
        raise UserError(f"training stopped: loss is {loss_v} at iteration {self.iteration} (epoch "
                        f"{self.epoch}) on the slices {shown}; nothing was saved from this step; "
                        f"{last} (check those slices for NaN/Inf values, lower optim.lr or use "
                        f"train.amp=off)")

    def _end_of_epoch(self, final: bool) -> None:
        cfg = self.cfg
        every = cfg.val.every_epochs
        due = self.val_volumes is not None and (final or (every and self.epoch % every == 0))
        dist_mod.broadcast_buffers(self.ctx, self.model)
        if self.ctx.is_main and due:
            summary, example = validate(self.model, self.val_volumes, self.classes, cfg.data.img_size,
                                        cfg.val.batch_size, self.ctx.device, self.amp_dtype,
                                        cfg.data.image_interpolation, cfg.train.channels_last,
                                        with_hd95=cfg.val.hd95)
            record = {"iteration": self.iteration, "epoch": self.epoch, "mean_dice": summary["mean_dice"],
                      "per_organ": summary["per_organ"]}
            hd95 = {k: summary[k] for k in ("hd95", "mean_hd95", "hd95_convention") if k in summary}
            record.update(hd95)
            self.val_history.append(record)
            self.log.line({"event": "validation", **record})
            self.log.scalars(self.iteration, {"mean_dice": summary["mean_dice"], **{
                f"dice/{k}": v for k, v in summary["per_organ"].items()}, **{
                f"hd95/{k}": v for k, v in hd95.get("hd95", {}).items()}}, prefix="val/")
            if example is not None:
                image, label, pred = example
                z = int(torch.argmax((label > 0).flatten(1).sum(1)))
                self.log.image("val/panel", self.iteration, panel(image[z].numpy(), label[z].numpy(), pred[z].numpy()))
            score = summary["mean_dice"]
            if math.isfinite(score) and score > self.best_metric:
                self.best_metric, self.best_iteration = score, self.iteration
                try:
                    self._save_best({"mean_dice": score, "per_organ": summary["per_organ"], **hd95,
                                     "validation": f"{cfg.val.source}:{cfg.val.split}"})
                except StorageError as exc:  # stop in save_last, all ranks together
                    self._pending_error = str(exc)
            if self.ctx.is_main and cfg.log.progress:
                from tqdm import tqdm

                organs = ", ".join(f"{k} {v:.3f}" for k, v in summary["per_organ"].items())
                hd = f", mean HD95 {summary['mean_hd95']:.2f}" if "mean_hd95" in summary else ""
                tqdm.write(f"epoch {self.epoch} iteration {self.iteration}: mean Dice {score:.4f}{hd} ({organs})")
        self.save_last()
        if self.ctx.is_main and self.val_volumes is None and final:
            # No validation: the final weights are the best we know.
            self._save_best({"validation": "none"})
        dist_mod.barrier(self.ctx)


def train(config: Config | str | os.PathLike, output_dir: str | os.PathLike, resume: bool = False,
          overrides: list[str] | tuple = ()) -> Path:
    """Train a model; returns the path of the best checkpoint.

    Args:
        config: a :class:`~transunet_app.config.Config` or a YAML file.
        output_dir: run folder (see module docstring).
        resume: continue the run in ``output_dir`` from its last checkpoint.
        overrides: ``key=value`` strings applied when ``config`` is a file.
    """
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        from ..config import config_from_dict

        config = config_from_dict(to_dict(config), overrides)
    return Trainer(config, output_dir, resume=resume).fit()
