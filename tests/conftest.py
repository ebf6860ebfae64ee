"""Shared fixtures: small data sets the tests make themselves, and ways to run the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from accel_signs.data.synth import SynthSpec, write_synthetic


def pytest_configure(config: pytest.Config) -> None:
    # One thread per test process, as the processes the tests launch have (helpers.cli_env): the
    # suite runs one test process per core (-n auto), and the tiny models' steps only lose from
    # more (a 6-epoch CLI run and a resume: 24.6-27.5 s with torch's 2 threads, 19.1-22.0 s with 1).
    torch.set_num_threads(1)


TINY = SynthSpec(classes=6, signers=2, reps=6, seed=3)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-sign, 2-signer synthetic store; read-only by convention (copy it to corrupt it)."""
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny", TINY)


@pytest.fixture
def store_copy(tiny_store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(tiny_store, dst)
    return dst


@pytest.fixture(scope="session")
def landmarker_cache(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A cache folder (for ACCEL_SIGNS_CACHE) whose landmarkers/ holds test bundles for the tasks
    extractor, built from the models MediaPipe 0.10.21's wheel ships (tests/make_landmarkers.py);
    None where the installed MediaPipe has no Tasks API or is the legacy one (auto: holistic).
    Nothing is downloaded from Google: the tests run the real Tasks code on these."""
    from accel_signs.extractors.choose import installed_default
    from accel_signs.extractors.tasks import available

    if not available() or installed_default() != "tasks":
        return None
    from make_landmarkers import make_bundles

    cache = tmp_path_factory.mktemp("landmarker-cache")
    make_bundles(cache / "landmarkers")
    return cache


@pytest.fixture
def with_landmarkers(landmarker_cache: Path | None, monkeypatch: pytest.MonkeyPatch) -> Path | None:
    """The test bundles as this process's landmarker cache (for the default extractor)."""
    if landmarker_cache is not None:
        monkeypatch.setenv("ACCEL_SIGNS_CACHE", str(landmarker_cache))
    return landmarker_cache
