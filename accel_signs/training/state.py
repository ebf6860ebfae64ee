"""The resumable training state: its format, written and read as a pair.

`state/` holds model.safetensors, optimizer.safetensors, average.safetensors (with
OptimConfig.ema_decay: the weight average), trainer.json (progress, optimizer and
scheduler settings, fp16's loss scale) and, per process, rng_<rank>.safetensors + .json (torch,
CUDA, numpy and Python RNG). Safetensors and JSON only: reading it never runs code. The folder
is written under a temporary name and swapped into place (files.replace_dir).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from accel_signs.core.collective import on_every, on_main
from accel_signs.core.errors import CheckpointError
from accel_signs.core.files import fresh_dir, fsync_file, replace_dir, write_json

STATE_FORMAT, STATE_VERSION = "accel_signs.state", 1
RngState = tuple[dict[str, torch.Tensor], dict[str, Any]]  # (tensors, JSON-able rest): capture_rng


def plain_weights(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights on the CPU, without DDP's or torch.compile's wrappers in their names."""
    state = accelerator.unwrap_model(model, keep_torch_compile=False).state_dict()
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_state(
    accelerator: Accelerator,
    final: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: dict[str, Any],
    average: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the state to `final` (with `average`, the weight average's tensors, when there is one) (collective: every process calls it and writes its own RNG
    state; the main process writes the rest and swaps the folder into place). On failure every
    process raises the same CheckpointError and the previous state is intact."""
    tmp = final.with_name(final.name + ".tmp")

    def write_shared() -> None:
        fresh_dir(tmp)
        _save_tensors(plain_weights(accelerator, model), tmp / "model.safetensors")
        opt_tensors, opt_rest = _split_tensors(optimizer.state_dict())
        _save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        if average is not None:
            _save_tensors(average, tmp / "average.safetensors")
        write_json(
            tmp / "trainer.json",
            {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                "progress": progress,
                "optimizer": opt_rest,
                "scheduler": scheduler.state_dict(),
                "grad_scaler": _scaler_state(accelerator),
                "num_processes": accelerator.num_processes,
            },
        )

    def write_rng() -> None:
        rank = accelerator.process_index
        rng_tensors, rng_rest = capture_rng()
        _save_tensors(rng_tensors, tmp / f"rng_{rank}.safetensors")
        write_json(tmp / f"rng_{rank}.json", rng_rest)

    intact = "; the previous state and best checkpoint are intact"
    try:
        on_main(accelerator, write_shared, f"cannot write the training state to {tmp}", CheckpointError)
        on_every(accelerator, write_rng, f"cannot write the RNG state to {tmp}", CheckpointError)
        on_main(
            accelerator,
            lambda: replace_dir(tmp, final),
            f"cannot move the training state into place at {final}",
            CheckpointError,
        )
    except CheckpointError as e:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{e}{intact}") from None
    except BaseException:  # e.g. a peer died in the middle (a failed collective): leave no half state
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_state(
    accelerator: Accelerator,
    state_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    average: Any = None,
) -> dict[str, Any]:
    """Restore what save_state wrote (safetensors + JSON only); returns the saved progress.
    `average`: a WeightAverage to restore too (its `load(tensors)`)."""
    try:
        meta = json.loads((state_dir / "trainer.json").read_text("utf-8"))
        if meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
            raise CheckpointError(f"{state_dir / 'trainer.json'}: not an accel_signs training state")
        if meta["num_processes"] != accelerator.num_processes:
            raise CheckpointError(
                f"{state_dir} was saved by {meta['num_processes']} process(es); resume it with the same "
                f"number (this launch has {accelerator.num_processes})"
            )
        accelerator.unwrap_model(model, keep_torch_compile=False).load_state_dict(
            load_file(state_dir / "model.safetensors")
        )
        optimizer.load_state_dict(_join_tensors(meta["optimizer"], load_file(state_dir / "optimizer.safetensors")))
        scheduler.load_state_dict(meta["scheduler"])
        if average is not None:
            average.load(load_file(state_dir / "average.safetensors"))
        if meta.get("grad_scaler") and accelerator.scaler is not None:  # fp16 only
            accelerator.scaler.load_state_dict(meta["grad_scaler"])
        rank = accelerator.process_index
        restore_rng(
            (
                load_file(state_dir / f"rng_{rank}.safetensors"),
                json.loads((state_dir / f"rng_{rank}.json").read_text("utf-8")),
            )
        )
    except FileNotFoundError as e:
        raise CheckpointError(f"{state_dir}: incomplete training state ({Path(e.filename).name} is missing)") from None
    except OSError as e:
        raise CheckpointError(f"{state_dir}: cannot read the training state ({e.strerror or e})") from None
    except (
        json.JSONDecodeError,
        UnicodeDecodeError,
        SafetensorError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
    ) as e:
        raise CheckpointError(f"{state_dir}: unreadable training state ({type(e).__name__}: {e})") from None
    return meta["progress"]


def _scaler_state(accelerator: Accelerator) -> dict[str, Any] | None:
    """fp16's loss scale and its growth tracker (plain numbers), so a resume keeps them."""
    scaler = accelerator.scaler
    return {k: (float(v) if isinstance(v, float) else v) for k, v in scaler.state_dict().items()} if scaler else None


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, path)
    fsync_file(path)


def _split_tensors(tree: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Tensors of a nested state dict into a flat {dotted key: tensor} dict for safetensors,
    the rest (with {"__tensor__": key} where a tensor was) for JSON."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, key: str) -> Any:
        if torch.is_tensor(node):
            tensors[key] = node.detach().to("cpu").contiguous()
            return {"__tensor__": key}
        if isinstance(node, dict):
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in node.items()]}  # keeps int keys
        if isinstance(node, (list, tuple)):
            return {
                "__tuple__" if isinstance(node, tuple) else "__list__": [
                    walk(v, f"{key}.{i}") for i, v in enumerate(node)
                ]
            }
        return node

    return tensors, walk(tree, prefix or "t")


def _join_tensors(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__dict__" in tree:
            return {k: _join_tensors(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(_join_tensors(v, tensors) for v in tree["__tuple__"])
        if "__list__" in tree:
            return [_join_tensors(v, tensors) for v in tree["__list__"]]
    return tree


def capture_rng() -> RngState:
    """This process's torch, CUDA, Python and numpy RNG states: tensors, and JSON-able rest."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [version, list(mt), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}


def restore_rng(state: RngState) -> None:
    """Set the RNGs to what capture_rng returned."""
    tensors, rest = state
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, mt, gauss = rest["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
