"""Shared fixtures: small data sets the tests make themselves, and ways to run the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from accel_signs.data.synth import SynthSpec, write_synthetic

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
