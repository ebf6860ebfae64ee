"""The training loop. One code path for 1..N processes: `accelerate launch` starts them,
the Accelerator owns devices, mixed precision, DDP and gradient clipping."""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.logging import get_logger
from accelerate.tracking import get_available_trackers
from accelerate.utils import (
    LoggerType,
    ProjectConfiguration,
    TorchDynamoPlugin,
    broadcast,
    gather,
    parse_flag_from_env,
    set_seed,
)
from torch.utils.data import DataLoader

from .checkpoint import RunWriter, checkpoint_meta, load_state
from .config import EvalConfig, TrainConfig, default_cache_dir
from .data.augment import Augmenter
from .data.pipeline import ClassMap, class_map, make_loader, select_clips, signer_indices, stratified_split
from .data.resident import ResidentClips, keep_on_device, resident_bytes
from .data.store import StoreSplit, open_store
from .data.synth import ensure_synthetic
from .errors import AccelSignsError, ConfigError, DatasetError, LaunchError, TrainingError
from .evaluate import evaluate_checkpoint, format_summary
from .layout import KeypointLayout
from .model import STTransformer
from .optim import Schedule, make_optimizer
from .progress import progress_bar

logger = get_logger(__name__)


@dataclass
class TrainState:
    """Progress that `save_state` must carry besides model/optimizer/scheduler/RNG."""

    epoch: int = 0
    best_val_loss: float = math.inf  # of the best epoch
    best_val_acc: float = -1.0  # of the best epoch
    best_epoch: int = 0

    def improved(self, metric: str, val_loss: float, val_acc: float) -> bool:
        """Whether this epoch beats the best so far by `metric` (accuracy ties: lower loss)."""
        if metric == "val_loss":
            return val_loss < self.best_val_loss
        return val_acc > self.best_val_acc or (val_acc == self.best_val_acc and val_loss < self.best_val_loss)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class TrainData:
    """What the loop needs from the store, chosen and split."""

    classes: ClassMap
    train_loader: DataLoader
    val_loader: DataLoader
    split_info: dict[str, Any]
    has_test: bool  # the store has a test split to evaluate the best checkpoint on
    on_device: bool  # the clips are held in the device's memory (--data-on-device)
    layout: KeypointLayout  # the store's keypoint layout: the model is built for it


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The Accelerator for this run; refuses launches that would train wrongly."""
    # Accelerator() honours ACCELERATE_USE_CPU, a bare PartialState() does not: without it,
    # this first call would set up the shared state as one unconnected CPU process.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    # `accelerate launch --multi_gpu` on a machine without GPUs starts N copies that never
    # connect: each sees one process, and each would train and write alone.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and state.num_processes == 1:
        raise LaunchError(
            f"WORLD_SIZE is {world} but this process is not connected to the others (it sees 1 process), "
            "so they would train as unconnected copies. On CPU-only machines launch with "
            "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N -m accel_signs train ...`; "
            "on GPU machines check that every process can see a GPU."
        )
    if cfg.debug and state.num_processes > 1:
        raise ConfigError(
            f"--debug runs a single process, but {state.num_processes} were launched: run `accelerate launch "
            "--config_file accelerate_configs/single_gpu_debug.yaml -m accel_signs train --debug` or plain "
            "`accel-signs train --debug`"
        )
    mixed = "no" if cfg.debug else cfg.mixed_precision
    if mixed == "auto":
        # What `accelerate launch` was configured with; bf16 on a GPU that has it otherwise.
        launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        gpu_bf16 = state.device.type == "cuda" and torch.cuda.is_bf16_supported()
        mixed = launched if launched != "no" else ("bf16" if gpu_bf16 else "no")
    if mixed == "fp16" and state.device.type == "cpu":
        # Accelerate runs fp16 on a CPU as plain fp32 without saying so.
        raise ConfigError("--mixed-precision fp16 needs a GPU; on a CPU use bf16 or no")
    return Accelerator(
        mixed_precision=mixed,
        # Static shapes: the one short last batch gets its own graph instead of turning every
        # step into dynamic-shape code, and CUDA graphs (reduce-overhead) need static shapes anyway.
        dynamo_plugin=TorchDynamoPlugin(backend="inductor", mode=cfg.compile_mode, dynamic=False)
        if cfg.compile
        else None,
        log_with=_trackers(cfg.log_with) or None,
        # Trackers that write files (TensorBoard) write into the run folder: <output_dir>/<run name>.
        project_config=ProjectConfiguration(project_dir=str(cfg.output_dir), logging_dir=str(cfg.output_dir)),
        # Shuffling from a seed of its own: the same order on every process and for every
        # run with this seed, independent of the RNG the model and augmentation use.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed, non_blocking=True),
    )


def _trackers(names: tuple[str, ...]) -> list[str]:
    """Check requested trackers up front: Accelerate silently drops the ones not installed."""
    for name in names:
        if name not in LoggerType.list():
            raise ConfigError(
                f"--log-with: unknown tracker {name!r}; Accelerate supports {', '.join(LoggerType.list())}"
            )
        if name != "all" and LoggerType(name) not in get_available_trackers():
            raise ConfigError(f"--log-with {name}: the {name} package is not installed (pip install {name})")
    return list(names)


def prepare_data(cfg: TrainConfig, accelerator: Accelerator) -> TrainData:
    """Open and validate the store, choose signs/signers, split train/val, build loaders.
    Everything that can reject the input runs here, before the run folder exists."""
    path = cfg.data.path
    if path is None:
        with accelerator.main_process_first():
            path = ensure_synthetic(cfg.data.cache_dir or default_cache_dir())
    store = open_store(path)
    split = store.split("train")
    classes = class_map(store, cfg.data.signs)
    train_signers, val_signers, test_signers = _protocol_signers(cfg, store)
    if val_signers:  # signer-independent validation: whole signers held out
        train_ids = select_clips(split, classes, signer_indices(store, train_signers))
        val_ids = select_clips(split, classes, signer_indices(store, val_signers))
    else:
        ids = select_clips(split, classes, signer_indices(store, train_signers))
        train_ids, val_ids = stratified_split(ids, split, cfg.data.val_fraction, cfg.seed)
    split.check_finite()
    if cfg.evaluate and "test" in store.splits:  # fail now, not after hours of training
        test = store.split("test")
        select_clips(test, classes, signer_indices(store, test_signers or train_signers))
        test.check_finite()
    if cfg.limit_batches:  # a fixed, seeded subset: whole loader passes keep Accelerate's bookkeeping intact
        rng = np.random.default_rng(cfg.seed)
        n = cfg.limit_batches * cfg.batch_size * accelerator.num_processes
        train_ids = np.sort(rng.permutation(train_ids)[:n])
        val_ids = np.sort(rng.permutation(val_ids)[: 2 * n])
    resident = _resident_clips(cfg, accelerator, split, np.concatenate([train_ids, val_ids]))
    workers = 0 if cfg.debug else cfg.data.num_workers
    if workers is None:  # on CPU the model step dominates and workers would take its cores
        workers = 0 if accelerator.device.type == "cpu" else min(4, (os.cpu_count() or 1) // accelerator.num_processes)
    common = dict(
        seq_len=cfg.data.seq_len, num_workers=workers, pin_memory=accelerator.device.type == "cuda", resident=resident
    )
    aug = cfg.data.augment
    return TrainData(
        classes=classes,
        on_device=resident is not None,
        train_loader=make_loader(
            split,
            train_ids,
            classes,
            batch_size=cfg.batch_size,
            train=True,
            crop_min=aug.crop_min,
            speed=(aug.speed_min, aug.speed_max),
            **common,
        ),
        val_loader=make_loader(split, val_ids, classes, batch_size=2 * cfg.batch_size, train=False, **common),
        has_test="test" in store.splits,
        layout=store.layout,
        split_info={
            "store": str(Path(path).resolve()),
            "split": split.name,
            "signs": [c.sign for c in classes.classes],
            "signers": list(train_signers),
            "val_signers": list(val_signers),
            "test_signers": list(test_signers),
            "seed": cfg.seed,
            "val_fraction": cfg.data.val_fraction,
            "train_ids": train_ids.tolist(),
            "val_ids": val_ids.tolist(),
        },
    )


def _resident_clips(
    cfg: TrainConfig, accelerator: Accelerator, split: StoreSplit, ids: np.ndarray
) -> ResidentClips | None:
    """Clips `ids` held on the device when --data-on-device says so and they fit; None to stream them."""
    on_device, why = keep_on_device(
        cfg.data.data_on_device, resident_bytes(split, ids), accelerator.device, accelerator.num_processes
    )
    # One path for all ranks (free memory may differ between GPUs); every rank then raises or not.
    if accelerator.num_processes > 1 and not bool(
        gather(torch.tensor([int(on_device)], device=accelerator.device)).all()
    ):
        on_device, why = False, why if not on_device else f"{why}, but not on every process"
    if cfg.data.data_on_device == "yes" and not on_device:
        raise DatasetError(
            f"{why}; use --data-on-device no (stream from the memory-mapped store) or fewer signs/signers"
        )
    if not on_device:
        logger.info("%s: clips streamed from the memory-mapped store", why)
        return None
    start = time.perf_counter()
    resident = ResidentClips.load(split, ids, accelerator.device)
    logger.info(
        "%s: clips held on %s, loaded in %.1fs%s",
        why,
        accelerator.device,
        time.perf_counter() - start,
        "; --num-workers is unused (batches are made on the device)" if cfg.data.num_workers else "",
    )
    return resident


def _protocol_signers(cfg: TrainConfig, store) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) signers. Val/test signers, when given, are held out of training; the
    test defaults to the val signers (signer-independent throughout), else the training signers."""
    val, test = list(cfg.data.val_signers or ()), list(cfg.data.test_signers or ())
    for option, names in (("--signers", cfg.data.signers or ()), ("--val-signers", val), ("--test-signers", test)):
        unknown = [s for s in names if s not in store.signers]
        if unknown:
            raise ConfigError(
                f"{option}: unknown signer(s) {', '.join(unknown)} in store {store.path} "
                f"(it has {', '.join(store.signers)})"
            )
    train = [s for s in (cfg.data.signers or store.signers) if s not in val and s not in test]
    if not train:
        raise ConfigError(
            f"no signer left to train on: --signers {','.join(cfg.data.signers or store.signers)} minus "
            f"--val-signers/--test-signers {','.join(dict.fromkeys(val + test))}"
        )
    return train, val, test or val


def train(cfg: TrainConfig, resume: Path | None = None) -> Path:
    """Train a model as `cfg` says, or continue the run folder `resume` from its last
    completed epoch; returns the best checkpoint's folder."""
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    if cfg.debug:
        _enable_debug_checks(accelerator)
    data = prepare_data(cfg, accelerator)
    layout = data.layout
    model = STTransformer(
        data.classes.num_classes,
        cfg.model.size,
        layout=layout,
        input=cfg.model.input,
        seq_len=cfg.data.seq_len,
        dropout=cfg.model.dropout,
        drop_path=cfg.model.drop_path,
    )
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # gloo (CPU) has no SyncBatchNorm
    lr = cfg.optim.scaled_lr(accelerator.num_processes)
    optimizer = make_optimizer(cfg.optim, model, lr, fused=accelerator.device.type == "cuda")
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, data.train_loader, data.val_loader
    )
    schedule = Schedule(cfg.optim, optimizer, len(train_loader), cfg.num_epochs)
    # Augmentation draws differ per process; model init above was the same everywhere.
    set_seed(cfg.seed, device_specific=True)
    runtime = {
        "num_processes": accelerator.num_processes,
        "device": accelerator.device.type,
        "mixed_precision": accelerator.mixed_precision,
        "lr": lr,
        "num_workers": data.train_loader.num_workers,
        "data_on_device": data.on_device,
        "global_batch_size": cfg.batch_size * accelerator.num_processes,
    }
    run, state = _start_run(accelerator, cfg, data, runtime, resume, (model, optimizer, schedule))
    if cfg.log_with:
        accelerator.init_trackers(run.path.name, config=_flat(cfg.to_dict()))
    augment = Augmenter(cfg.data.augment, layout, cfg.model.input.kind)
    logger.info(
        "run %s: %d classes, %d train / %d val clips, model %s (%.2fM parameters), %d process(es) on %s, "
        "mixed precision %s, lr %.3g",
        run.path,
        data.classes.num_classes,
        len(data.split_info["train_ids"]),
        len(data.split_info["val_ids"]),
        cfg.model.size,
        sum(p.numel() for p in model.parameters()) / 1e6,
        accelerator.num_processes,
        accelerator.device,
        accelerator.mixed_precision,
        lr,
    )

    first_epoch = state.epoch + 1
    for epoch in range(first_epoch, cfg.num_epochs + 1):
        start = time.perf_counter()
        lr_now = optimizer.param_groups[0]["lr"]
        train_loss, seen = train_one_epoch(accelerator, model, (optimizer, schedule), train_loader, augment, cfg, epoch)
        val_start = time.perf_counter()
        val_loss, val_acc = evaluate(accelerator, model, val_loader)
        if cfg.compile and epoch == first_epoch:
            logger.info(
                "torch.compile: epoch %d took %.1fs, its validation %.1fs, compilation included (later epochs "
                "show the compiled speed)",
                epoch,
                val_start - start,
                time.perf_counter() - val_start,
            )
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            kept = f"the best checkpoint so far is {run.best_dir}" if state.best_epoch else "no checkpoint was saved"
            raise TrainingError(
                f"epoch {epoch}: the loss is not finite (train {train_loss}, val {val_loss}): training "
                f"diverged; lower --lr or check the data ({kept})"
            )
        schedule.step_epoch(val_loss)
        seconds = time.perf_counter() - start
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr_now,
            "seconds": round(seconds, 3),
            "samples_per_s": round(seen / seconds, 1),
        }
        state.epoch = epoch
        if state.improved(cfg.best_metric, val_loss, val_acc):
            state.best_val_loss, state.best_val_acc, state.best_epoch = val_loss, val_acc, epoch
            meta = checkpoint_meta(
                cfg,
                data.classes.classes,
                epoch,
                metrics,
                {k: v for k, v in data.split_info.items() if not k.endswith("_ids")},
                runtime,
                layout,
            )
            run.save_best(model, meta)
        run.log_epoch(metrics)
        run.save_state(model, optimizer, schedule, state.state_dict())
        logger.info(
            "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.4f  lr %.3g  %.1fs  %.0f samples/s%s",
            epoch,
            cfg.num_epochs,
            train_loss,
            val_loss,
            val_acc,
            lr_now,
            seconds,
            seen / seconds,
            "  *best*" if state.best_epoch == epoch else "",
        )

    logger.info(
        "best epoch %d (by %s): val_loss %.4f, val_acc %.4f; checkpoint %s",
        state.best_epoch,
        cfg.best_metric,
        state.best_val_loss,
        state.best_val_acc,
        run.best_dir,
    )
    if cfg.evaluate:
        evaluate_after_training(cfg, accelerator, run, data)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    accelerator.free_memory()
    return run.best_dir


def _start_run(
    accelerator: Accelerator,
    cfg: TrainConfig,
    data: TrainData,
    runtime: dict[str, Any],
    resume: Path | None,
    trained: tuple,
) -> tuple[RunWriter, TrainState]:
    """A new run folder, or the `resume` one with model, optimizer, scheduler, RNG and progress restored."""
    state = TrainState()
    if resume is None:
        run = RunWriter.create(accelerator, cfg, data.classes.num_classes, runtime)
        run.write_json("split.json", data.split_info)
        return run, state
    run = RunWriter.open(accelerator, resume, data.split_info)
    # The resumed config (e.g. more epochs) becomes the run's, so a second resume keeps it.
    run.write_json("config.json", {**cfg.to_dict(), "runtime": {**runtime, "run_name": run.path.name}})
    state.load_state_dict(load_state(accelerator, run.path / "state", *trained))
    run.truncate_metrics(state.epoch)
    logger.info("resuming %s after epoch %d (best epoch %d)", run.path, state.epoch, state.best_epoch)
    return run, state


def evaluate_after_training(cfg: TrainConfig, accelerator: Accelerator, run: RunWriter, data: TrainData) -> None:
    """Evaluate the best checkpoint on the test split (if the store has one) and draw the plots.
    The run has succeeded by now: a failure here is reported, not raised."""
    store, test_signers = Path(data.split_info["store"]), data.split_info["test_signers"]
    try:
        if data.has_test:
            result = evaluate_checkpoint(
                EvalConfig(checkpoint=run.best_dir, data=store, split="test", signers=tuple(test_signers) or None),
                accelerator,
            )
            logger.info("best checkpoint on the test split (%s):\n%s", result.output, format_summary(result.summary))
            accelerator.log({f"test/{k}": result.summary[k] for k in ("top1", "top5", "macro_f1")}, step=cfg.num_epochs)
        else:
            logger.warning("store %s has no test split: skipped the final evaluation", store)
    except AccelSignsError as e:
        logger.error(
            "the final evaluation failed (the checkpoint is saved; retry with `accel-signs evaluate %s`): %s",
            run.best_dir,
            e,
        )
    run.draw_training_curves()


def _check_finite(accelerator: Accelerator, bad_step: torch.Tensor, epoch: int) -> None:
    """Stop all processes together if any saw a non-finite loss: nothing after it is saved, so
    the best checkpoint and the state of the last completed epoch stay as they were."""
    steps = accelerator.gather(bad_step[None])  # (processes,): 0 where the loss stayed finite
    if steps.any():
        step = int(steps[steps > 0].min())
        raise TrainingError(
            f"epoch {epoch}, step {step}: the loss is not finite: training diverged; lower --lr or "
            "check the data (the best checkpoint and the state of the last completed epoch are kept)"
        )


def _enable_debug_checks(accelerator: Accelerator) -> None:
    """Slow but exact: anomaly detection and deterministic kernels (warn, not fail, where
    an op has no deterministic version)."""
    if accelerator.device.type == "cpu":
        logger.warning("debug: no GPU available, running on the CPU")
    # cuBLAS needs this before its first call to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.autograd.set_detect_anomaly(True)
    logger.info("debug: one process, fp32, num_workers=0, anomaly detection and deterministic algorithms on")


def _log_step(
    accelerator: Accelerator,
    step: int,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: torch.Tensor,
    grad_norm: torch.Tensor | float | None,
    lr: float,
) -> None:
    """One debug line per step: what went in, what came out, and what it cost."""
    if accelerator.device.type == "cuda":
        memory = f"cuda max allocated {torch.cuda.max_memory_allocated(accelerator.device) / 2**20:.0f} MiB"
    else:
        memory = f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    logger.info(
        "step %d: x %s %s, y %s, loss %.4f, grad norm %s, lr %.3g, %s",
        step,
        tuple(x.shape),
        x.dtype,
        tuple(y.shape),
        loss.item(),
        "n/a" if grad_norm is None else f"{float(grad_norm):.4f}",
        lr,
        memory,
    )


def train_one_epoch(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optim: tuple[torch.optim.Optimizer, Schedule],
    loader: DataLoader,
    augment: Augmenter,
    cfg: TrainConfig,
    epoch: int,
) -> tuple[float, int]:
    """One pass over the training data; returns (mean loss over all processes, samples seen by all)."""
    optimizer, schedule = optim
    model.train()
    loader.set_epoch(epoch)
    totals = torch.zeros(2, device=accelerator.device)  # loss sum, sample count; summed without a sync per step
    bad_step = torch.zeros((), dtype=torch.long, device=accelerator.device)  # first step with a non-finite loss
    with progress_bar(f"epoch {epoch}/{cfg.num_epochs}", len(loader), accelerator.is_main_process) as advance:
        for step, (x, aspect, y, _) in enumerate(loader, 1):
            x = x.flatten(2)  # (B, T, P, C) -> (B, T, P*C)
            with accelerator.accumulate(model):
                loss = F.cross_entropy(model(x, aspect, augment=augment), y, label_smoothing=cfg.optim.label_smoothing)
                accelerator.backward(loss)
                grad_norm = None
                if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    schedule.step_batch()
            if cfg.debug:
                _log_step(accelerator, step, x, y, loss, grad_norm, optimizer.param_groups[0]["lr"])
            totals[0] += loss.detach().float() * len(y)  # Python numbers: no host-to-device copy, no sync
            totals[1] += len(y)
            bad_step = torch.where((bad_step == 0) & ~torch.isfinite(loss.detach()), step, bad_step)
            if step % 20 == 0 or step == len(loader):  # one small sync every 20 steps
                _check_finite(accelerator, bad_step, epoch)
            advance()
    loss_sum, count = accelerator.reduce(totals, reduction="sum").tolist()
    return loss_sum / count, int(count)


@torch.no_grad()
def evaluate(accelerator: Accelerator, model: torch.nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Exact mean loss and accuracy over every clip of a prepared loader, on every process."""
    model.eval()
    # DDP keeps BatchNorm statistics per process; evaluate every shard with the main
    # process's, which are the ones the checkpoint saves.
    broadcast(list(model.buffers()), from_process=0)
    per_sample = []
    for x, aspect, y, _ in loader:
        logits = model(x.flatten(2), aspect)  # (B, T, P, C) -> (B, T, P*C)
        loss = F.cross_entropy(logits.float(), y, reduction="none")
        correct = (logits.argmax(dim=-1) == y).float()
        # gather_for_metrics drops the samples the prepared loader repeated to even out shards.
        per_sample.append(accelerator.gather_for_metrics(torch.stack([loss, correct], dim=1)))  # (B, 2)
    loss, correct = torch.cat(per_sample).double().mean(dim=0).tolist()
    return loss, correct


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}, scalars only (what tracker hparams accept)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
