"""Peak memory of `accel-signs prepare` on a large source: the conversion streams, so the
process's resident memory should not grow with the data.

    python benchmarks/prepare_memory.py --gb 5 --from seed-mmap   # or --from npz
    python benchmarks/prepare_memory.py --gb 5 --from npz --keep /tmp/work

Writes a KArSL-shaped source of about --gb gigabytes of float32 frames (502 signs x 3 signers,
13-140 frames per clip) in the seed's format into a temporary folder, runs
`accel-signs prepare` on it in a child process and prints the child's peak RSS and time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAME_BYTES = 184 * 4 * 4


def write_source(root: Path, kind: str, gb: float) -> int:
    rng = np.random.default_rng(0)
    per_group = max(1, round(gb * 1e9 / FRAME_BYTES / 76.5 / (502 * 3)))  # 76.5 = mean clip length
    lens = {
        sign: {signer: [int(n) for n in rng.integers(13, 141, per_group)] for signer in (1, 2, 3)}
        for sign in range(1, 503)
    }
    block = rng.random((140 * per_group, 184, 4), dtype=np.float32)  # content is irrelevant to memory
    total = sum(sum(v) for d in lens.values() for v in d.values())
    root.mkdir(parents=True)
    if kind == "npz":
        for signer in (1, 2, 3):
            (root / f"{signer:02d}-train").mkdir()
            for sign in range(1, 503):
                offs = np.concatenate([[0], np.cumsum(lens[sign][signer])])
                clips = [block[offs[i] : offs[i + 1]] for i in range(per_group)]
                np.savez(root / f"{signer:02d}-train" / f"{sign:04d}.npz", *clips)
    else:
        with open(root / "train_X.mmap", "wb") as f:
            for sign in sorted(lens):
                for signer in sorted(lens[sign]):
                    for n in lens[sign][signer]:
                        f.write(block[:n].tobytes())
        labels = [sign - 1 for sign in sorted(lens) for signer in sorted(lens[sign]) for _ in lens[sign][signer]]
        np.save(root / "train_X_shape.npy", np.array([total, 184, 4]))
        np.savez(root / "train_y.npz", np.array(labels, dtype=np.int64))
        np.save(root / "train_X_map_samples_lens.npy", lens, allow_pickle=True)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=5.0)
    ap.add_argument("--from", dest="kind", choices=("npz", "seed-mmap"), default="seed-mmap")
    ap.add_argument("--keep", type=Path, help="work folder to use and keep (default: a temporary one, removed)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="prepare_memory-"))
    try:
        frames = write_source(work / "src", args.kind, args.gb)
        cmd = [
            sys.executable,
            "-m",
            "accel_signs",
            "-q",
            "prepare",
            str(work / "src"),
            str(work / "store"),
            "--from",
            args.kind,
            "--splits",
            "train",
        ] + (["--allow-pickle"] if args.kind == "seed-mmap" else [])
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
        print(
            json.dumps(
                {
                    "source": args.kind,
                    "frames": frames,
                    "frames_gb": round(frames * FRAME_BYTES / 1e9, 2),
                    "peak_rss_mib": round(peak_mib),
                    "seconds": round(seconds, 1),
                }
            )
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
