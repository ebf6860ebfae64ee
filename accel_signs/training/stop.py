"""Stopping a run when asked to: preemption on a cluster.

A scheduler that takes the machines back sends a signal and waits a grace period before it
kills: SLURM sends SIGTERM (and, with `--signal=USR1@SECONDS`, SIGUSR1 that long before the
time limit); `accelerate launch` (torchrun) forwards SIGTERM to every rank, and SIGUSR1 too
when TORCHELASTIC_SIGNALS_TO_HANDLE names it. Each rank only notes the signal here; the loop
asks at its next check point whether any rank was signalled (one collective, so every rank
stops after the same step), saves the state there, mid-epoch, and raises Stopped.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from accelerate import Accelerator

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_PR_SET_PDEATHSIG = 1  # prctl(2)


class StopRequest:
    """The stop signals, noted while the run trains (install/uninstall around it)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Note SIGTERM and SIGUSR1 instead of dying of them (main thread only: elsewhere, as in a
        notebook's worker thread, Python cannot take signals and the run stops as it did before)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._note)
        _die_with_launcher()

    def uninstall(self, ignore: bool = False) -> None:
        """Restore the handlers from before install, or with `ignore` leave the stop signals
        ignored: for a rank of several that is ending in an error or a stop its caller still has
        to report. A launcher that saw another rank exit sends SIGTERM to the rest at once, and the
        default action would kill this one before it says why (its `error:` or `stopped:` line)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore else handler)
        self._previous.clear()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signum
            # Logging from a signal handler may deadlock on the logging lock: write directly.
            os.write(2, f"{signal.Signals(signum).name}: stopping after the current step\n".encode())

    def agreed(self, accelerator: Accelerator) -> str | None:
        """The signal's name if this or any other rank got one, else None; every rank gets the
        same answer (a collective when there are several: call it on every rank at once)."""
        got = self.signal or 0
        if accelerator.num_processes > 1:
            # A gather, not reduce(reduction="max"): Accelerate before 1.14 had only "sum" and
            # "mean" and summed for any other name (15 + 15 became 30, SIGPWR).
            got = int(accelerator.gather(torch.tensor([got], device=accelerator.device)).max())
        return signal.Signals(got).name if got else None


def _die_with_launcher() -> None:
    """When `accelerate launch` started this process, have the kernel send it SIGTERM if the
    launcher dies: the launcher of a single process does not forward signals (it dies of SIGTERM
    and leaves its child training), and torchrun dies of a signal it does not handle. Linux only;
    elsewhere signal the training processes themselves."""
    if not sys.platform.startswith("linux") or not _launched_by_accelerate():
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the prctl: nobody would send it any more
        os.kill(os.getpid(), signal.SIGTERM)


def _launched_by_accelerate() -> bool:
    """Whether the parent process is `accelerate launch` or the torchrun agent it runs."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return True
    try:
        cmdline = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # `accelerate launch ...` or `python -m accelerate.commands.launch ...`
    words = b" ".join(cmdline)
    return b"accelerate" in words and b"launch" in words
