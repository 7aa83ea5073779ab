"""Shared fixtures: a tiny synthetic corpus in both layouts, OpenFace-format file writers, the real-data folder."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openface import AU_COLUMNS, FEATURE_COLUMNS  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
TINY_MODEL = ["--embed-dim", "16", "--lstm-hidden", "16", "--attn-dim", "16", "--attn-hops", "4"]

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent")


def load_prepare():
    spec = importlib.util.spec_from_file_location("prepare", ROOT / "data" / "synthetic" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script: str, *args: str, timeout: int = 600, torchrun: int | None = None) -> subprocess.CompletedProcess:
    """Run a top-level script in a fresh interpreter (optionally under torchrun with N CPU processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
    return subprocess.run(launcher + [str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """24 clips of 3-5 s from 6 source videos, in both layouts, with labels.csv and truth.json."""
    out = tmp_path_factory.mktemp("tiny")
    assert load_prepare().main(["--clips", "24", "--seconds", "3", "5", "-o", str(out)]) == 0
    return out


def openface_header(columns, spaced: bool = True) -> str:
    return (", " if spaced else ",").join(columns)


def write_openface(path: Path, n_frames: int, *, columns=None, spaced: bool = True, success=None, confidence=None,
                   face_ids=None, seed: int = 0, extra: dict | None = None) -> np.ndarray:
    """An OpenFace FeatureExtraction-style CSV; returns the feature values (n_frames, 22) it holds."""
    rng = np.random.default_rng(seed)
    values = np.round(np.c_[rng.uniform(0, 5, (n_frames, len(AU_COLUMNS))),
                            rng.uniform(-0.6, 0.6, (n_frames, 5))], 3)
    face_ids = np.zeros(n_frames, int) if face_ids is None else np.asarray(face_ids)
    success = np.ones(n_frames, int) if success is None else np.asarray(success)
    confidence = np.full(n_frames, 0.95) if confidence is None else np.asarray(confidence)
    meta = {"frame": np.arange(1, n_frames + 1), "face_id": face_ids, "timestamp": np.arange(n_frames) / 30,
            "confidence": confidence, "success": success}
    table = {**meta, "gaze_0_x": np.zeros(n_frames), "p_rx": rng.normal(size=n_frames)}
    table.update({c: values[:, j] for j, c in enumerate(FEATURE_COLUMNS)})
    table.update(extra or {})
    columns = list(table) if columns is None else columns
    lines = [openface_header(columns, spaced)]
    sep = ", " if spaced else ","
    for i in range(n_frames):
        lines.append(sep.join(str(table[c][i]) if not isinstance(table[c][i], float) else f"{table[c][i]:.3f}"
                              for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return values
