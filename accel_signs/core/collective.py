"""Work that one process does for all, or each for itself, with the outcome shared.

Every process returns the same value or raises the same error, and does so before any of them
reaches the next barrier: a failure seen by one process alone would leave the others waiting
in a collective that never completes (NCCL's watchdog fires minutes later; gloo drops the
connection when the failing process exits).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from safetensors import SafetensorError

from accel_signs.core.errors import AccelSignsError

T = TypeVar("T")
# What writing files can raise: the OS's errors, safetensors' (it reports I/O errors as its
# own type), and ours. Anything else is a bug and propagates as it is.
_EXPECTED = (OSError, SafetensorError, AccelSignsError)


def _describe(what: str, e: BaseException) -> str:
    if isinstance(e, AccelSignsError):
        return str(e)
    return f"{what}: {getattr(e, 'strerror', None) or e}"


def on_main(accelerator: Accelerator, fn: Callable[[], T], what: str, error: type[AccelSignsError]) -> T:
    """`fn()` on the main process; every process returns its result or raises `error` with the
    same message. `fn`'s result must be picklable (it is broadcast)."""
    result, problem = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except _EXPECTED as e:
            problem = _describe(what, e)
    result, problem = broadcast_object_list([result, problem], from_process=0)
    if problem:
        raise error(problem)
    return result


def on_every(accelerator: Accelerator, fn: Callable[[], Any], what: str, error: type[AccelSignsError]) -> None:
    """`fn()` on every process (each writes its own part); if any fails, all raise `error` with
    the first failure's message."""
    problem = None
    try:
        fn()
    except _EXPECTED as e:
        problem = _describe(what, e)
    problems = gather_object([problem])
    first = next((p for p in problems if p), None)
    if first:
        raise error(first)


def exit_rank(code: int) -> NoReturn:
    """End a process that was one rank of several with `code`, without finalizing the interpreter.

    Once a run's files are written and its process group destroyed, gloo's worker threads may
    still hold the last reference to a collective's tensors (the process group outlives
    destroy_process_group while DDP has used it). If the main thread is already finalizing
    the interpreter when a worker drops it, the worker's GIL request ends the thread inside
    C++ and the process aborts: "terminate called without an active exception", SIGABRT, and
    the launcher reports a failed run whose files are all there (seen about once in ten test
    suites on a loaded 2-core machine). os._exit skips the finalization, after flushing what
    Python would have flushed: the log handlers and the standard streams. A collection first
    lets objects that are only in reference cycles (loaders' worker processes) close as usual.
    """
    gc.collect()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to save
            pass
    os._exit(code)
