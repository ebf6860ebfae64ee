"""The training loop. One code path for 1..N processes: `accelerate launch` starts them,
the Accelerator owns devices, mixed precision, DDP and gradient clipping."""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    parse_flag_from_env,
    set_seed,
)
from torch.utils.data import DataLoader

from accel_signs.config import EvalConfig, TrainConfig
from accel_signs.core.collective import on_main
from accel_signs.core.errors import AccelSignsError, ConfigError, LaunchError, Stopped, TrainingError
from accel_signs.core.memory import keep_freed_memory
from accel_signs.core.progress import progress_bar
from accel_signs.data.augment import Augmenter
from accel_signs.data.training import TrainData, training_data
from accel_signs.model.checkpoint import CheckpointMeta, checkpoint_meta
from accel_signs.model.registry import build_model
from accel_signs.model.transfer import Freeze, init_from_checkpoint
from accel_signs.training.average import BatchMix, WeightAverage, mix_batch, mixed_losses
from accel_signs.training.awp import AdversarialWeights, awp_active, rng_restore, rng_snapshot
from accel_signs.training.evaluate import evaluate_checkpoint, format_summary
from accel_signs.training.optim import Schedule, make_optimizer
from accel_signs.training.run import STOP_RECORD, ResumePlan, Run, Runtime, StopRecord, plan_resume
from accel_signs.training.state import RngState, capture_rng, restore_rng
from accel_signs.training.stop import StopRequest

logger = get_logger(__name__)


@dataclass
class TrainState:
    """Progress that the saved state must carry besides model/optimizer/scheduler/RNG."""

    epoch: int = 0
    best_val_loss: float = math.inf  # of the best epoch
    best_val_acc: float = -1.0  # of the best epoch
    best_epoch: int = 0
    best_mean: float | None = None  # the best epoch's mean --best-metric over best_window epochs (consider)
    recent: list[list[float]] = field(default_factory=list)  # [val_loss, val_acc] of the last epochs, oldest first
    # Where the next epoch starts when the run stopped inside it (a signal; see stop.py): the
    # steps it did, each process's (loss sum, sample count) so far, and the lr the epoch began
    # with. None when the last save was at an epoch's end.
    partial: dict[str, Any] | None = None
    stopped_by: str | None = None  # the signal that stopped the run at its last save, if one did

    def consider(self, epoch: int, metric: str, val_loss: float, val_acc: float, window: int = 1) -> bool:
        """Note this epoch's validation; if it beats the best so far by `metric`, make it the best.

        A tie in `metric` goes to the better mean of it over `window` epochs (this one and those
        before it: one epoch's accuracy on a small validation set is noisy, its neighbours' weights
        are close to its own, so the mean measures the stretch of training it ends, on `window`
        times the clips); a tie in that too, with val_acc, to the lower val loss; after that the
        earlier epoch stays. With window 1 it is the rule of runs before config version 3."""
        self.recent = [*self.recent, [val_loss, val_acc]][-window:]
        column = 0 if metric == "val_loss" else 1
        # Rounded: the same accuracies summed in another order must tie.
        mean = round(sum(r[column] for r in self.recent) / len(self.recent), 9)
        sign = -1.0 if metric == "val_loss" else 1.0  # compared as "higher is better"
        value, best = (val_loss, self.best_val_loss) if metric == "val_loss" else (val_acc, self.best_val_acc)
        if self.best_epoch == 0 or value != best:
            better = self.best_epoch == 0 or sign * value > sign * best
        elif window > 1 and self.best_mean is not None and mean != self.best_mean:
            better = sign * mean > sign * self.best_mean
        else:
            better = metric == "val_acc" and val_loss < self.best_val_loss
        if better:
            self.best_val_loss, self.best_val_acc, self.best_epoch, self.best_mean = val_loss, val_acc, epoch, mean
        return better

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


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


def train(cfg: TrainConfig | None = None, resume: str | os.PathLike[str] | ResumePlan | None = None) -> Path:
    """Train a model as `cfg` says, or continue a run from its last completed epoch. Returns the
    best checkpoint's folder.

    `resume` is a run folder (with `cfg` None the run continues with its own config, else `cfg`
    may differ from it only where a resume allows: run.plan_resume), or the ResumePlan that
    plan_resume already made of one (what the CLI passes, with `cfg` None)."""
    if isinstance(resume, ResumePlan):
        if cfg is not None:
            raise ConfigError("train(): a ResumePlan carries its own config; pass cfg=None with it")
    elif resume is not None:
        resume = plan_resume(resume, cfg)
    elif cfg is None:
        raise ConfigError("train() needs a TrainConfig, or resume=<run folder>")
    cfg = resume.config if resume is not None else cfg
    keep_freed_memory()  # a CPU step reuses its tensors' memory instead of faulting it in again (core/memory.py)
    stop = StopRequest()
    stop.install()  # before the process group: a signal during start-up is noted, not fatal
    ending_rank = False  # a rank of several, ending in an error or a stop: see StopRequest.uninstall
    try:
        accelerator = make_accelerator(cfg)
        try:
            return _train(cfg, accelerator, resume, stop)
        except AccelSignsError:
            ending_rank = accelerator.num_processes > 1
            # Raised on every process together (collective.py): leave the process group cleanly, so
            # no process is torn down by a peer that exits while it still holds the group.
            accelerator.end_training()
            raise
        except RuntimeError as e:
            ending_rank = accelerator.num_processes > 1
            if ending_rank and _peer_lost(e):
                raise _lost_peer_error(accelerator, e) from None
            raise
    finally:
        stop.uninstall(ignore=ending_rank)


def _peer_lost(error: RuntimeError) -> bool:
    """Whether a collective failed because another process of the run is gone."""
    text = str(error)
    return isinstance(error, torch.distributed.DistError) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL")
    )


def _lost_peer_error(accelerator: Accelerator, error: RuntimeError) -> TrainingError:
    """One line for a rank whose peer died (killed, out of memory, its machine gone): the others
    cannot go on without it. What the run saved last is complete (saves are atomic)."""
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    cause = cause.split("] ", 1)[-1].split(". ")[0][:200]  # gloo prefixes its source location, then explains
    return TrainingError(
        f"process {accelerator.process_index} of {accelerator.num_processes}: another process of this run "
        f"stopped ({cause}), so this one stops too; the last saved state and best checkpoint are complete: "
        "resume the run with --resume"
    )


def _train(cfg: TrainConfig, accelerator: Accelerator, resume: ResumePlan | None, stop: StopRequest) -> Path:
    set_seed(cfg.seed)
    if cfg.debug:
        _enable_debug_checks(accelerator)
    data = training_data(cfg, accelerator)
    model = build_model(cfg.model, data.classes.num_classes, data.layout, cfg.data.seq_len)
    init = None  # --init-from: what was taken over; a resumed run's weights come from its state
    if cfg.init_from is not None:
        init = resume.init_from if resume is not None else init_from_checkpoint(model, cfg.init_from)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # gloo (CPU) has no SyncBatchNorm
    freeze = Freeze.of(model, init) if init is not None and cfg.freeze_epochs else None
    lr = cfg.optim.scaled_lr(accelerator.num_processes)
    optimizer = make_optimizer(cfg.optim, model, lr, fused=accelerator.device.type == "cuda")
    # Prepared: sharded per process and moved to the device (data's own loaders stay as built).
    model, optimizer, prepared_train, prepared_val = accelerator.prepare(model, optimizer, *data.loaders)
    schedule = Schedule(cfg.optim, optimizer, len(prepared_train), cfg.num_epochs)
    # Augmentation draws differ per process; model init above was the same everywhere.
    set_seed(cfg.seed, device_specific=True)
    runtime = Runtime.of(accelerator, lr, data.train_loader.num_workers, data.on_device, cfg.batch_size)
    runtime.init_from = init
    average = None
    if cfg.optim.ema_decay > 0:  # the plain module's parameters: the same tensors DDP and compile train
        average = WeightAverage(accelerator.unwrap_model(model, keep_torch_compile=False), cfg.optim.ema_decay)
    run, state = _open_run(accelerator, cfg, runtime, data, resume, (model, optimizer, schedule), average)
    # A run stopped inside an epoch takes up its RNG where it stopped, after redrawing the batches
    # it already trained on (the loader's own draws would move the RNG on).
    resume_rng = capture_rng() if state.partial else None
    if cfg.log_with:
        accelerator.init_trackers(run.path.name, config=_flat(cfg.to_dict()))
    loop = Loop(
        cfg,
        accelerator,
        model,
        (optimizer, schedule),
        prepared_train,
        prepared_val,
        Augmenter(cfg.data.augment, data.layout, cfg.model.input.kind, accelerator.device),
        run,
        state,
        lambda epoch, metrics: checkpoint_meta(
            cfg, data.classes.classes, epoch, metrics, data.record(), runtime.to_dict(), data.layout, data.extractor
        ),
        freeze,
        stop,
        resume_rng,
        average,
    )
    size = sum(p.numel() for p in model.parameters()) / 1e6
    logger.info(
        f"run {run.path}: {data.classes.num_classes} classes, {len(data.partition.train_ids)} train / "
        f"{len(data.partition.val_ids)} val clips, model {cfg.model.size} ({size:.2f}M parameters), "
        f"{accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
        f"{accelerator.mixed_precision}, lr {lr:.3g}"
    )
    first_epoch = state.epoch + 1
    for epoch in range(first_epoch, cfg.num_epochs + 1):
        run_epoch(loop, epoch, compiling=cfg.compile and epoch == first_epoch)
        if signal := stop.agreed(accelerator):  # it came during validation or the save
            state.stopped_by = signal  # saved again with it, for a job script to see why it stopped
            run.save_state(model, optimizer, schedule, state.state_dict())
            steps = len(prepared_train)
            raise _stopped(run, StopRecord(signal, epoch, steps, steps, accelerator.num_processes, str(run.path)))
    logger.info(
        f"best epoch {state.best_epoch} (by {cfg.best_metric}): val_loss {state.best_val_loss:.4f}, "
        f"val_acc {state.best_val_acc:.4f}; checkpoint {run.best_dir}"
    )
    finish(cfg, accelerator, run, data)
    return run.best_dir


def _open_run(
    accelerator: Accelerator,
    cfg: TrainConfig,
    runtime: Runtime,
    data: TrainData,
    resume: ResumePlan | None,
    trained: tuple[torch.nn.Module, torch.optim.Optimizer, Schedule],
    average: WeightAverage | None = None,
) -> tuple[Run, TrainState]:
    """A new run folder, or the resumed one with the model, optimizer, schedule (and weight
    average) restored from its state; with the progress to go on from."""
    state = TrainState()
    if resume is None:
        run = Run.create(accelerator, cfg, runtime, data.partition)
        run.average = average
        return run, state
    run = Run.resume(accelerator, resume.run_dir, cfg, runtime, data.partition)
    run.average = average
    state.load_state_dict(run.load_state(*trained))
    where = (
        f"in epoch {state.epoch + 1}, after step {state.partial['step']}"
        if state.partial
        else f"after epoch {state.epoch}"
    )
    logger.info("resuming %s %s (best epoch %d)", run.path, where, state.best_epoch)
    return run, state


@dataclass
class Loop:
    """What every epoch works on. Its loaders are the prepared ones (accelerator.prepare): each
    process's shard, on its device; the loaders TrainData built are not used past preparing."""

    cfg: TrainConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optim: tuple[torch.optim.Optimizer, Schedule]
    prepared_train: DataLoader
    prepared_val: DataLoader
    augment: Augmenter
    run: Run
    state: TrainState
    describe: Callable[[int, dict[str, Any]], CheckpointMeta]  # (epoch, metrics) -> checkpoint_meta
    freeze: Freeze | None = None  # --freeze-epochs: the taken-over tensors, held for the first epochs
    stop: StopRequest | None = None  # the signals asking the run to stop (stop.py)
    resume_rng: RngState | None = None  # a run stopped mid-epoch: its RNG where it stopped
    average: WeightAverage | None = None  # OptimConfig.ema_decay: the weight average


def _stopped(run: Run, record: StopRecord) -> Stopped:
    """Record the stop in the run folder (stopped.json, for a requeue script), and the error that
    ends the run with exit code 75."""
    run.record_stop(record)
    where = (
        f"after epoch {record.epoch}"
        if record.step == record.steps
        else f"in epoch {record.epoch}, after step {record.step} of {record.steps}"
    )
    return Stopped(
        f"{record.signal} {where}: the state is saved in {run.path / 'state'} ({STOP_RECORD} says so); "
        f"continue with `{record.resume_command}` (exit code {Stopped.exit_code})"
    )


def run_epoch(loop: Loop, epoch: int, compiling: bool = False) -> dict[str, Any]:
    """Train one epoch (or the rest of one a stopped run began), validate, keep the best
    checkpoint, log, save the state. A stop signal ends it at a step boundary, with the state saved
    there (Stopped)."""
    cfg, accelerator, state, run = loop.cfg, loop.accelerator, loop.state, loop.run
    optimizer, schedule = loop.optim
    partial = state.partial
    start, lr = time.perf_counter(), partial["lr"] if partial else optimizer.param_groups[0]["lr"]
    freeze = loop.freeze if epoch <= cfg.freeze_epochs else None
    if cfg.model.late_dropout > 0:  # a rate, no tensors: set every epoch, a resumed run included
        on = epoch >= cfg.model.late_dropout_epoch
        accelerator.unwrap_model(loop.model).head_dropout.p = cfg.model.late_dropout if on else 0.0
    try:
        train_loss, seen = train_one_epoch(
            accelerator,
            loop.model,
            loop.optim,
            loop.prepared_train,
            loop.augment,
            cfg,
            epoch,
            freeze,
            resume=(partial, loop.resume_rng) if partial else None,
            stop=loop.stop,
            average=loop.average,
        )
    except EpochStopped as e:
        state.partial = {"step": e.step, "sums": e.sums, "lr": lr}
        state.stopped_by = e.signal
        run.save_state(loop.model, optimizer, schedule, state.state_dict())
        steps, processes = len(loop.prepared_train), accelerator.num_processes
        raise _stopped(run, StopRecord(e.signal, epoch, e.step, steps, processes, str(run.path))) from None
    loop.resume_rng = None
    state.partial, state.stopped_by = None, None
    new = seen - (int(sum(c for _, c in partial["sums"])) if partial else 0)  # samples trained by this launch
    val_start = time.perf_counter()
    val_loss, val_acc = validate(accelerator, loop.model, loop.prepared_val)
    if compiling:
        logger.info(
            f"torch.compile: epoch {epoch} took {val_start - start:.1f}s, its validation "
            f"{time.perf_counter() - val_start:.1f}s, compilation included (later epochs show the compiled speed)"
        )
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        kept = f"the best checkpoint so far is {run.best_dir}" if state.best_epoch else "no checkpoint was saved"
        raise TrainingError(
            f"epoch {epoch}: the loss is not finite (train {train_loss}, val {val_loss}): "
            f"training diverged; lower --lr or check the data ({kept})"
        )
    schedule.step_epoch(val_loss)
    seconds = time.perf_counter() - start
    metrics = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": lr,
        "seconds": round(seconds, 3),
        "samples_per_s": round(new / seconds, 1),
    }
    state.epoch = epoch
    best = _keep_best(loop, epoch, metrics)
    run.log_epoch(metrics)
    accelerator.log({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
    run.save_state(loop.model, optimizer, schedule, state.state_dict())
    logger.info(
        f"epoch {epoch}/{cfg.num_epochs}  train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  "
        f"val_acc {val_acc:.4f}  lr {lr:.3g}  {seconds:.1f}s  {new / seconds:.0f} samples/s"
        + (f"  ema val_loss {metrics['ema_val_loss']:.4f} val_acc {metrics['ema_val_acc']:.4f}" if loop.average else "")
        + (f"  *best*{' (ema)' if best == 'ema' else ''}" if best else "")
    )
    return metrics


def _keep_best(loop: Loop, epoch: int, metrics: dict[str, Any]) -> str | None:
    """Validate the weight average too (if any; its figures go into `metrics`), and save the
    better of the two as best/ when it beats the best so far. Returns which was saved ("model",
    "ema") or None."""
    cfg, state, average = loop.cfg, loop.state, loop.average
    chosen, weights = metrics, "model"
    if average is not None:
        with average.swapped_in():
            ema = validate(loop.accelerator, loop.model, loop.prepared_val)
        metrics["ema_val_loss"], metrics["ema_val_acc"] = ema
        if _better(cfg.best_metric, *ema, metrics["val_loss"], metrics["val_acc"]):
            chosen, weights = {**metrics, "val_loss": ema[0], "val_acc": ema[1], "weights": "ema"}, "ema"
    if not state.consider(epoch, cfg.best_metric, chosen["val_loss"], chosen["val_acc"], cfg.best_window):
        return None
    if weights == "ema":
        with average.swapped_in():
            loop.run.save_best(loop.model, loop.describe(epoch, chosen))
    else:
        loop.run.save_best(loop.model, loop.describe(epoch, metrics))
    return weights


def _better(metric: str, loss: float, acc: float, other_loss: float, other_acc: float) -> bool:
    """Whether (loss, acc) beats (other_loss, other_acc) by `metric` (accuracy ties: the lower loss)."""
    if metric == "val_loss":
        return loss < other_loss
    return acc > other_acc or (acc == other_acc and loss < other_loss)


def finish(cfg: TrainConfig, accelerator: Accelerator, run: Run, data: TrainData) -> None:
    """Evaluate the best checkpoint on the test split (when asked and the store has one), draw the
    training curves, and close the trackers and the process group. A failure reaches every
    process alike (no one waits in a barrier for a process that gave up) and is raised there."""
    from accel_signs.core.plots import plot_training_curves
    from accel_signs.model.card import write_card

    try:
        if cfg.evaluate and data.has_test:
            result = evaluate_checkpoint(
                EvalConfig(
                    checkpoint=run.best_dir,
                    data=Path(data.partition.store),
                    split="test",
                    signers=tuple(data.partition.test_signers) or None,
                ),
                accelerator,
            )
            logger.info("best checkpoint on the test split (%s):\n%s", result.output, format_summary(result.summary))
            accelerator.log({f"test/{k}": result.summary[k] for k in ("top1", "top5", "macro_f1")}, step=cfg.num_epochs)
        elif cfg.evaluate:
            logger.warning("store %s has no test split: skipped the final evaluation", data.partition.store)
        if cfg.evaluate:
            on_main(
                accelerator,
                lambda: plot_training_curves(run.path),
                f"cannot draw the training curves of {run.path}",
                TrainingError,
            )
        on_main(
            accelerator,
            lambda: write_card(run.best_dir),
            f"cannot write the model card of {run.best_dir}",
            TrainingError,
        )
    except AccelSignsError as e:
        raise TrainingError(
            f"the final evaluation failed; the best checkpoint is saved (retry with `accel-signs "
            f"evaluate {run.best_dir}`): {e}"
        ) from None
    finally:
        accelerator.wait_for_everyone()
        accelerator.end_training()
        accelerator.free_memory()


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


class EpochStopped(Exception):
    """A stop signal ended the epoch after `step` steps (train_one_epoch to run_epoch), with each
    process's (loss sum, sample count) so far."""

    def __init__(self, signal: str, step: int, sums: list[list[float]]):
        super().__init__(signal)
        self.signal, self.step, self.sums = signal, step, sums


def train_one_epoch(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optim: tuple[torch.optim.Optimizer, Schedule],
    loader: DataLoader,
    augment: Augmenter,
    cfg: TrainConfig,
    epoch: int,
    freeze: Freeze | None = None,
    resume: tuple[dict[str, Any], RngState | None] | None = None,
    stop: StopRequest | None = None,
    average: WeightAverage | None = None,
) -> tuple[float, int]:
    """One pass over the training data; returns (mean loss over every clip, clips seen), counted
    exactly: the samples Accelerate repeats to even out the shards are left out, so 1 and N
    processes report the same numbers.

    `resume`: (TrainState.partial, the RNG state saved with it) of a run stopped inside this
    epoch: its steps are skipped and its sums carried on. `stop`: raise EpochStopped at the first
    check point after a stop signal, on every process alike (before the epoch's last step only:
    a stop there lets the epoch end and be saved whole). `average`: updated after every optimizer
    step. Mixup and cutmix (cfg.data.augment) mix the batch's features and its loss; AWP
    (cfg.optim.awp_lambda, from awp_epoch) takes each step from a second, adversarial pass."""
    optimizer, schedule = optim
    model.train()
    if freeze is not None:
        freeze.hold()
    loader.set_epoch(epoch)
    # loss sum, sample count of this process; summed without a sync per step (a resumed epoch
    # goes on from each process's own sums: summing them in another order would round otherwise)
    totals = torch.tensor(resume[0]["sums"][accelerator.process_index] if resume else [0.0, 0.0])
    totals = totals.to(accelerator.device)
    skip = resume[0]["step"] if resume else 0
    last = torch.zeros(0, device=accelerator.device)  # the last batch's per-sample losses, padding dropped
    bad_step = torch.zeros((), dtype=torch.long, device=accelerator.device)  # first step with a non-finite loss
    # How often every process checks the others (one small collective and host sync): each step
    # on a CPU, where a step costs far more; every 20 on a GPU, where it would stall the queue.
    every = 20 if accelerator.device.type == "cuda" else 1
    awp = None
    if awp_active(cfg.optim.awp_lambda, cfg.optim.awp_epoch, epoch):
        awp = AdversarialWeights(accelerator.unwrap_model(model, keep_torch_compile=False), cfg.optim.awp_lambda)
    with progress_bar(f"epoch {epoch}/{cfg.num_epochs}", len(loader), accelerator.is_main_process) as advance:
        for step, (x, aspect, y, _) in enumerate(loader, 1):
            if step <= skip:  # trained before the run stopped; the batch was drawn the same way
                if step == skip and resume[1] is not None:
                    restore_rng(resume[1])
                advance()
                continue
            x = x.flatten(2)  # (B, T, P, C) -> (B, T, P*C)
            with accelerator.accumulate(model):
                mix = mix_batch(y, x.shape[1], cfg.data.augment)
                if awp is not None:
                    rng = rng_snapshot(accelerator.device)
                    with accelerator.no_sync(model):  # this gradient only points the perturbation: no all-reduce
                        losses = _losses(model, x, aspect, y, augment, mix, cfg)
                        accelerator.backward(losses.mean())
                    if freeze is not None:
                        freeze.drop_grads()
                    with awp.perturbed(optimizer):
                        rng_restore(rng, accelerator.device)  # the same augmented batch, the same dropout
                        accelerator.backward(_losses(model, x, aspect, y, augment, mix, cfg).mean())
                else:
                    losses = _losses(model, x, aspect, y, augment, mix, cfg)
                    accelerator.backward(losses.mean())
                loss = losses.mean()
                if freeze is not None:
                    freeze.drop_grads()
                grad_norm = None
                if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    schedule.step_batch()
                    if average is not None:
                        average.update()
            if cfg.debug:
                _log_step(accelerator, step, x, y, loss, grad_norm, optimizer.param_groups[0]["lr"])
            if accelerator.gradient_state.end_of_dataloader:
                # Only the last batch holds repeated samples; gather_for_metrics drops them.
                last = accelerator.gather_for_metrics(losses.detach().float())
            else:
                totals[0] += losses.detach().float().sum()
                totals[1] += len(y)  # a Python number: no host-to-device copy, no sync
            bad_step = torch.where((bad_step == 0) & ~torch.isfinite(loss.detach()), step, bad_step)
            check = step % every == 0 or step == len(loader)
            if check:
                _check_finite(accelerator, bad_step, epoch)
            if stop is not None and step < len(loader) and (check or accelerator.num_processes == 1):
                if signal := stop.agreed(accelerator):
                    raise EpochStopped(signal, step, accelerator.gather(totals[None]).tolist())  # (processes, 2)
            advance()
    loss_sum, count = accelerator.reduce(totals, reduction="sum").tolist()
    return (loss_sum + float(last.sum())) / (count + len(last)), int(count) + len(last)


def _losses(
    model: torch.nn.Module,
    x: torch.Tensor,
    aspect: torch.Tensor,
    y: torch.Tensor,
    augment: Augmenter,
    mix: BatchMix | None,
    cfg: TrainConfig,
) -> torch.Tensor:
    """Per-clip training losses of a batch (B,): label smoothing, and mixup/cutmix's two labels."""
    smoothing = cfg.optim.label_smoothing
    if mix is None:
        return F.cross_entropy(model(x, aspect, augment=augment), y, reduction="none", label_smoothing=smoothing)
    logits = model(x, aspect, augment=augment, mix=(mix.partner, mix.features))
    losses = F.cross_entropy(logits, y, reduction="none", label_smoothing=smoothing)
    partner = F.cross_entropy(logits, y[mix.partner], reduction="none", label_smoothing=smoothing)
    return mixed_losses(losses, partner, mix.label)


@torch.no_grad()
def validate(accelerator: Accelerator, model: torch.nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Exact mean loss and accuracy over every clip of a prepared loader, on every process."""
    model.eval()
    # DDP keeps BatchNorm statistics per process; validate every shard with the main
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
