"""Shared helpers: a tiny synthetic corpus in both layouts, OpenFace-format file writers, checkpoints, running the
scripts (in this process, or as real processes for torchrun and kill -9), and the real-data folder."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.synthetic import prepare  # noqa: E402
from dataset import Normalization  # noqa: E402
from openface import AU_COLUMNS, FEATURE_COLUMNS, TRAITS, InputFile, ReadOptions, read_clips, read_openface_csv  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
TINY_MODEL = ["--embed-dim", "16", "--lstm-hidden", "16", "--attn-dim", "16", "--attn-hops", "4",
              "--conv-channels", "16", "16", "16", "--conv-kernels", "5", "5", "5", "--conv-dilations", "1", "4", "16",
              "--head-hidden", "16"]

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs real processes or programs (make test-fast leaves it out)")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_script(script: str, *args) -> Result:
    """Run a top-level script's main() in this process, capturing what it prints (fast: no new interpreter)."""
    module = importlib.import_module(Path(script).stem)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = module.main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def process_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def run_process(script: str, *args, timeout: int = 600, torchrun: int | None = None) -> subprocess.CompletedProcess:
    """Run a top-level script in a fresh interpreter (optionally under torchrun with N CPU processes)."""
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
    return subprocess.run(launcher + [str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=process_env(), cwd=ROOT)


def one_line_error(result, *fragments: str) -> str:
    """Assert a refusal: exit status 1, one line on stderr naming every fragment, no traceback; return the line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def tree_digest(folder: Path) -> dict[str, str]:
    """Path -> SHA-256 of every file below a folder (to prove inputs are byte-identical afterwards)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_faces(path: Path, features=FEATURE_COLUMNS, **reading):
    """The clips of one raw OpenFace CSV (one per face), with ReadOptions(**reading)."""
    return read_openface_csv(InputFile(Path(path), Path(path).name), features, ReadOptions(**reading))


def read_one(path: Path, features=FEATURE_COLUMNS, **reading):
    """The one clip of a raw OpenFace CSV, with ReadOptions(**reading)."""
    clips = read_faces(path, features, **reading)
    assert len(clips) == 1, [c.clip_id for c in clips]
    return clips[0]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """24 clips of 3-5 s from 6 source videos, in both layouts, with labels.csv and truth.json."""
    out = tmp_path_factory.mktemp("tiny")
    assert prepare.main(["--clips", "24", "--seconds", "3", "5", "-o", str(out)]) == 0
    return out


def our_checkpoint(path: Path, corpus: Path, features=FEATURE_COLUMNS, kind: str = "hybrid", seed: int = 0) -> Path:
    """A small untrained network of ours with the corpus's standardisation, saved at `path`."""
    import torch

    from checkpoint import Checkpoint, save_checkpoint
    from featurizers import LINEAR_PATHS
    from model import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(kind=kind, n_features=len(features), embed_dim=16, lstm_hidden=16, attn_dim=16, attn_hops=4,
                      conv_channels=(16, 16, 16), conv_kernels=(5, 5, 5), conv_dilations=(1, 4, 16), head_hidden=(16,),
                      **{path.enabled_by: False for path in LINEAR_PATHS})
    clips, _ = read_clips([corpus / "frames.csv"], features)
    save_checkpoint(path, Checkpoint(build_model(cfg), cfg, tuple(features),
                                     normalization=Normalization.fit("standard", clips, features)))
    return path


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


def set_cell(path: Path, line: int, column: str, text: str) -> None:
    """Replace one cell of a CSV (line numbers count the header as line 1)."""
    lines = path.read_text().splitlines()
    header = [c.strip() for c in lines[0].split(",")]
    sep = ", " if ", " in lines[0] else ","
    cells = lines[line - 1].split(sep)
    cells[header.index(column)] = text
    lines[line - 1] = sep.join(cells)
    path.write_text("\n".join(lines) + "\n")


def five(value: float) -> dict:
    return {"extraversion": value, "neuroticism": value, "agreeableness": value, "conscientiousness": value,
            "openness": value}


@pytest.fixture
def small_disk(tmp_path):
    """A 600 kB file system of its own (tmpfs; needs root), to fill up; remount(size) makes it larger."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", mount], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", mount], check=True)

    try:
        yield mount, remount
    finally:
        subprocess.run(["umount", "-l", mount], capture_output=True)


__all__ = ["ROOT", "REAL", "TINY_MODEL", "TRAITS", "needs_real", "run_script", "run_process",
           "one_line_error", "tree_digest", "read_one", "our_checkpoint", "write_openface", "set_cell", "five",
           "small_disk", "read_faces"]

