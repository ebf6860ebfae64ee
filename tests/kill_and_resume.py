"""Interrupt a training run again and again, resume it each time, and check that it ends
exactly where an uninterrupted run ends.

    python tests/kill_and_resume.py --kills 20                           # 1 process, 20 SIGKILLs
    python tests/kill_and_resume.py --processes 2 --kills 20 --sigterms 5  # 2 ranks on gloo
    python tests/kill_and_resume.py --kills 2 --processes 2 --sigterms 1   # short (the test suite)

One process: SIGKILL the run. Two processes (`accelerate launch --multi_gpu`, gloo on CPU):
SIGKILL one rank chosen at random (the other must exit by itself within --grace seconds, with
one `error:` line and exit code 1: the SIGTERM the launcher sends it must not cut that short),
and SIGTERM the launcher in the middle of an epoch (it forwards the signal; every rank must save
its state at a step boundary inside the epoch, say `stopped:` and exit with code 75). The kills
and SIGTERMs come in a random order.

After a SIGTERM the next start is decided the way examples/slurm_multinode.sh decides to
requeue: by the run folder's stopped.json, never by the exit code. The launcher's code is
only checked to be one that a clean stop gives: 75 without a launcher; under `accelerate
launch`, 1 up to Accelerate 1.15 (torchrun reports the ranks' 75 as its own failure) or 143
(128 + SIGTERM) from 1.16. A stop fails the run when the record is missing or disagrees with
the saved state, or when a rank did not say `stopped:`.

The kill window is calibrated: the uninterrupted run, which comes first, times its start-up
(launch to the end of the first epoch, less one epoch) and an epoch. A fifth of the kills
(seeded; none of fewer than 5) come during start-up, at a random point of the measured start-up
time; the others at a random point of the 3 epochs after
the (re)started run saved its first epoch, so they interrupt training after a saved epoch however
slow a start was on a loaded machine. The script counts the interruptions that came after the
start saved an epoch and fails when fewer than half did. The run is sized so that it cannot
finish before the last interruption.

After every interruption it checks that the best checkpoint loads and that the saved state is
complete. At the end it compares every metrics.jsonl line (epoch, losses, accuracy, lr) and the
best and final weights with the uninterrupted run's, bit for bit. Exit code 0 when all matched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from accel_signs.data.synth import SynthSpec, write_synthetic
from accel_signs.model.checkpoint import load_checkpoint

KEYS = ("epoch", "train_loss", "val_loss", "val_acc", "lr")
STOPPED = 75  # the exit code of a run that saved its state on a signal (errors.Stopped)
# What `accelerate launch` of several processes returns once every rank stopped cleanly on a
# SIGTERM: 1 up to Accelerate 1.15 (torchrun's ChildFailedError for the ranks' 75), 128 + 15
# from 1.16 (it exits with the signal's code). Neither says whether the state was saved.
LAUNCHER_STOPPED = {1, 128 + signal.SIGTERM}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(store: Path, out: Path, epochs: int, resume: bool, processes: int) -> list[str]:
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        launch += ["--main_process_port", str(free_port())]
    cmd = [*launch, "-m", "accel_signs", "-q", "train", "--data", str(store), "--output-dir", str(out)]
    cmd += ["--num-epochs", str(epochs), "--model-size", "t_2_1", "--batch-size", "4", "--seed", "7", "--no-eval"]
    return cmd + (["--resume", str(out / "r")] if resume else ["--run-name", "r"])


def metrics(run: Path) -> list[tuple]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [tuple(json.loads(line)[k] for k in KEYS) for line in path.read_text().splitlines() if line.strip()]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def resumable(run: Path) -> bool:
    # A kill between the two renames of a state swap leaves only state.old: resume recovers it.
    return (run / "state" / "trainer.json").exists() or (run / "state.old" / "trainer.json").exists()


def stop_record(run: Path) -> dict | None:
    """The run's stopped.json: what a requeue script reads (None when there is none)."""
    path = run / "stopped.json"
    return json.loads(path.read_text()) if path.exists() else None


def ranks_of(launcher: int) -> list[int]:
    """The training processes the launcher started (its children)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == launcher:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def stacks(pid: int) -> str:
    """The Python and native stacks of a process, by py-spy (the dev extra) where it runs."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        proc = subprocess.run([spy, "dump", "--native", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(no stacks of {pid}: {e})"
    return proc.stdout + proc.stderr[-500:]


def wait_for(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def reference(store: Path, out: Path, env: dict[str, str], processes: int, epochs: int) -> tuple[float, float, float]:
    """The uninterrupted run, timed as it goes: (start-up seconds, seconds per epoch, seconds in
    all). Its first epochs calibrate the kill window, so no separate run is needed for that."""
    run = out / "r"
    start = time.monotonic()
    proc = subprocess.Popen(
        train_cmd(store, out, epochs, False, processes),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen = []
    while proc.poll() is None:
        while len(seen) < 3 and len(metrics(run)) > len(seen):
            seen.append(time.monotonic() - start)
        time.sleep(0.02)
    total = time.monotonic() - start
    if proc.returncode != 0 or len(seen) < 3:
        raise SystemExit(f"the uninterrupted run failed (exit {proc.returncode}, {len(metrics(run))} epochs)")
    epoch_s = (seen[2] - seen[0]) / 2
    return max(0.0, seen[0] - epoch_s), epoch_s, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs (of a random rank with --processes 2)")
    ap.add_argument("--sigterms", type=int, default=0, help="SIGTERMs mid-epoch (to the launcher with --processes 2)")
    ap.add_argument("--processes", type=int, default=1, choices=(1, 2))
    ap.add_argument("--grace", type=float, default=60.0, help="seconds the other rank may take to exit")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times and targets")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill_resume-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCEL_SIGNS_CACHE": str(work / "cache")}
    if args.processes > 1:
        env["ACCELERATE_USE_CPU"] = "1"  # with --multi_gpu: real ranks on gloo (tests/helpers.py)
    store = write_synthetic(work / "store", SynthSpec(classes=6, signers=2, reps=6, seed=1))
    rng = random.Random(args.seed)

    events = ["kill"] * args.kills + ["sigterm"] * args.sigterms
    rng.shuffle(events)
    kill_at = [i for i, e in enumerate(events) if e == "kill"]
    early = set(rng.sample(kill_at, k=len(kill_at) // 5))  # kills during start-up
    # A start trains at most 5 epochs before its interruption: ask for more than all of them.
    epochs = 5 * len(events) + 6
    startup_s, epoch_s, reference_s = reference(store, work / "ref", env, args.processes, epochs)
    print(json.dumps({"startup_s": round(startup_s, 2), "epoch_s": round(epoch_s, 3), "epochs": epochs}), flush=True)
    timeout = 10 * (startup_s + 5 * epoch_s) + 60  # for a start to save its first epoch, on a loaded machine

    run, log, problems = work / "killed" / "r", [], []
    fresh_starts = 0
    requeue = False  # what the last SIGTERM's record said: requeue (resume) the run
    for n, event in enumerate(events, 1):
        # As the SLURM example decides: a stop record means requeue with --resume; after a kill,
        # --resume whenever a state was saved.
        resume = requeue or resumable(run)
        requeue = False
        if not resume:  # interrupted before its first epoch was saved: nothing to resume, start again
            shutil.rmtree(run, ignore_errors=True)
            fresh_starts += n > 1
        before = len(metrics(run))
        err = work / f"stderr-{n}.txt"
        with err.open("w") as stderr:
            proc = subprocess.Popen(
                train_cmd(store, work / "killed", epochs, resume, args.processes),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
            entry: dict = {"n": n, "event": event}
            if event == "kill":
                if n - 1 in early:  # during start-up
                    delay = rng.uniform(0.2, 0.9) * startup_s
                    entry["during_startup"] = True
                else:  # in training, after this start saved an epoch
                    wait_for(lambda b=before, p=proc: len(metrics(run)) > b or p.poll() is not None, timeout)
                    delay = rng.uniform(0, 3) * epoch_s
                entry["after_s"] = round(delay, 2)
                if wait_for(lambda p=proc: p.poll() is not None, delay):
                    problems.append(f"event {n}: the run ended (exit {proc.returncode}) before its kill")
                    break
                if args.processes == 1:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    ranks = ranks_of(proc.pid)
                    if not ranks:  # so early that the launcher has not started them: kill it
                        os.killpg(proc.pid, signal.SIGKILL)
                        entry["killed"] = "the launcher, before it started the ranks"
                    else:
                        victim = rng.randrange(len(ranks))
                        killed_at = time.monotonic()
                        os.kill(ranks[victim], signal.SIGKILL)
                        others = [p for i, p in enumerate(ranks) if i != victim]
                        gone = wait_for(lambda o=others: not any(alive(p) for p in o), 5)
                        if not gone:  # where it waits, for the report (it leaves within 3 s when all is well)
                            entry["_stacks"] = [stacks(p) for p in others]
                            gone = wait_for(lambda o=others: not any(alive(p) for p in o), args.grace - 5)
                        entry.update(
                            rank_killed=victim, others_exit_s=round(time.monotonic() - killed_at, 2), _others=others
                        )
                        if not gone:
                            problems.append(f"event {n}: the other rank still ran {args.grace:.0f}s after the kill")
                            for p in others:
                                os.kill(p, signal.SIGKILL)
                try:  # the launcher ends once its ranks have, and reports the failure
                    entry["exit"] = proc.wait(args.grace)
                except subprocess.TimeoutExpired:
                    problems.append(f"event {n}: the launcher still ran {args.grace:.0f}s after its ranks")
                    os.killpg(proc.pid, signal.SIGKILL)
                    entry["exit"] = proc.wait()
                if entry["exit"] == 0:
                    problems.append(f"event {n}: the launcher exited 0 after a kill")
            else:
                # Mid-epoch: once this start has saved an epoch, a random point inside the next.
                if not wait_for(lambda b=before, p=proc: len(metrics(run)) > b or p.poll() is not None, timeout):
                    problems.append(f"event {n}: no epoch ended within {timeout:.0f}s")
                if proc.poll() is not None:
                    problems.append(f"event {n}: the run ended (exit {proc.returncode}) before its SIGTERM")
                    break
                time.sleep(rng.uniform(0.2, 0.6) * epoch_s)
                os.kill(proc.pid, signal.SIGTERM)  # the launcher (or the one process)
                proc.wait()
                partial = json.loads((run / "state" / "trainer.json").read_text())["progress"].get("partial")
                entry.update(exit=proc.returncode, stopped_mid_epoch=bool(partial), step=partial and partial["step"])
                clean = {STOPPED} if args.processes == 1 else {STOPPED, *LAUNCHER_STOPPED}
                if proc.returncode not in clean:
                    problems.append(f"event {n}: exit code {proc.returncode} after SIGTERM")
                record = stop_record(run)
                said = sum(line.startswith("stopped: SIGTERM") for line in err.read_text(errors="replace").splitlines())
                entry.update(record=bool(record), ranks_stopped=said)
                if record is None:
                    problems.append(f"event {n}: no stopped.json after SIGTERM")
                elif (record["signal"], record["processes"]) != ("SIGTERM", args.processes) or record["step"] != (
                    partial["step"] if partial else record["steps"]
                ):
                    problems.append(f"event {n}: stopped.json {record} disagrees with the saved state {partial}")
                if said != args.processes:
                    problems.append(f"event {n}: {said} of {args.processes} processes said `stopped:`")
                requeue = record is not None
        done = len(metrics(run))
        text = err.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.startswith(("error:", "stopped:"))]
        entry.update(epochs_logged=done, trained_after_a_saved_epoch=done > before, lines=lines[:2])
        if "Traceback" in text and args.processes == 1:
            problems.append(f"event {n}: a traceback on stderr ({err})")
        if event == "kill" and args.processes > 1 and entry.get("others_exit_s") is not None:
            # the other rank's one line (unless the kill came before the ranks had connected)
            entry["other_rank_line"] = any("another process of this run stopped" in line for line in lines)
            # The launcher's summary gives each rank's exit: the other rank exits 1 once it has said
            # why, not killed by the SIGTERM the launcher sends when it sees a rank gone.
            exits = {int(pid): int(code) for code, pid in re.findall(r"exitcode\s*:\s*(-?\d+) \(pid: (\d+)\)", text)}
            entry["other_rank_exit"] = [exits.get(p) for p in entry.pop("_others")]
            dumped = entry.pop("_stacks", None)
            if dumped:
                (work / f"stacks-{n}.txt").write_text("\n".join(dumped))
            if not entry.get("during_startup"):
                said = [line for line in text.splitlines() if line.startswith(("SIGTERM", "Traceback", "terminate"))]
                tail = "\n".join(said + text.splitlines()[-15:])
                if dumped:
                    tail += "\n5 s after the kill, the other rank was in:\n" + "\n".join(dumped)
                if not entry["other_rank_line"]:
                    problems.append(f"event {n}: the other rank did not say why it stopped ({err}):\n{tail}")
                if any(code != 1 for code in entry["other_rank_exit"]):
                    problems.append(
                        f"event {n}: the other rank's exit {entry['other_rank_exit']}, not 1 ({err}):\n{tail}"
                    )
        if (run / "best").exists() or (run / "best.old").exists():
            load_checkpoint(run / "best")  # raises if an interruption left it unreadable (best.old is recovered)
        elif done:
            problems.append(f"event {n}: epochs were logged but no best checkpoint is left")
        state = run / "state" if (run / "state").exists() else run / "state.old"
        if state.exists():
            json.loads((state / "trainer.json").read_text())
            want = ["model.safetensors", "optimizer.safetensors", "trainer.json"]
            want += [f"rng_{r}.{ext}" for r in range(args.processes) for ext in ("safetensors", "json")]
            missing = [f for f in want if not (state / f).exists()]
            if missing:
                problems.append(f"event {n}: the saved state lacks {missing}")
        log.append(entry)
        print(json.dumps(entry), flush=True)

    final_err = work / "stderr-final.txt"
    with final_err.open("w") as stderr:
        final = subprocess.run(
            train_cmd(store, work / "killed", epochs, resumable(run), args.processes),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    ref = work / "ref" / "r"
    kills = [e for e in log if e["event"] == "kill"]
    terms = [e for e in log if e["event"] == "sigterm"]
    interrupted_training = sum(e["trained_after_a_saved_epoch"] for e in log)
    result = {
        "processes": args.processes,
        "kills": len(kills),
        "sigterms": len(terms),
        "sigterms_mid_epoch": sum(bool(e.get("stopped_mid_epoch")) for e in terms),
        "interrupted_training_after_a_saved_epoch": interrupted_training,
        "fresh_starts": fresh_starts,
        "slowest_other_rank_exit_s": max((e.get("others_exit_s", 0) for e in kills), default=None),
        "other_rank_error_lines": sum(bool(e.get("other_rank_line")) for e in kills),
        "final_exit": final.returncode,
        "epochs": epochs,
        "metrics_equal": final.returncode == 0 and metrics(run) == metrics(ref),
        "best_weights_equal": same_weights(run / "best" / "model.safetensors", ref / "best" / "model.safetensors"),
        "final_weights_equal": same_weights(run / "state" / "model.safetensors", ref / "state" / "model.safetensors"),
        "reference_seconds": round(reference_s, 1),
        "problems": problems,
    }
    if stop_record(run) is not None:
        problems.append("the finished run still has a stopped.json")
    if len(log) and interrupted_training * 2 < len(log):
        problems.append(f"only {interrupted_training} of {len(log)} interruptions came after a saved epoch")
    if result["sigterms_mid_epoch"] < len(terms):
        problems.append(f"only {result['sigterms_mid_epoch']} of {len(terms)} SIGTERMs stopped inside an epoch")
    print(json.dumps(result))
    ok = result["metrics_equal"] and result["best_weights_equal"] and result["final_weights_equal"]
    ok = ok and not problems and len(log) == len(events)
    if args.workdir is None and ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
