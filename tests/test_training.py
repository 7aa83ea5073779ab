"""attn_regression.py and attn_retrain.py end to end on the tiny synthetic corpus."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import ROOT, TINY_MODEL, run_script
from model import load_checkpoint

FAST = ["--epochs", "3", "--batch-size", "4", *TINY_MODEL]


def epoch_metrics(log_path) -> list[dict]:
    """The per-epoch log without wall-clock fields."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("seconds", "clips_per_s")} for row in rows]


def train(corpus, out, *extra, split=None):
    split = split or out.parent / "split.csv"
    return run_script("attn_regression.py", corpus / "frames.csv", "-o", out, "--split", split, *FAST, *extra)


def test_training_writes_checkpoints_log_and_curve_and_is_deterministic(tiny_corpus, tmp_path):
    first = train(tiny_corpus, tmp_path / "a" / "m.pt", split=tmp_path / "split.csv")
    assert first.returncode == 0, first.stderr
    assert "created split" in first.stdout and "epoch   3/3" in first.stdout
    for name in ("m.pt", "m.last.pt", "m.log.jsonl", "m.curve.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    second = train(tiny_corpus, tmp_path / "b" / "m.pt", split=tmp_path / "split.csv")
    assert second.returncode == 0 and "using split" in second.stdout
    assert epoch_metrics(tmp_path / "a" / "m.log.jsonl") == epoch_metrics(tmp_path / "b" / "m.log.jsonl")
    ckpt = load_checkpoint(tmp_path / "a" / "m.pt")
    meta = ckpt.meta
    for key in ("features", "traits", "normalization", "seed", "split", "data_fingerprint", "code_version", "metrics"):
        assert key in meta
    assert meta["split"]["sha256"] == __import__("hashlib").sha256((tmp_path / "split.csv").read_bytes()).hexdigest()
    assert len(meta["normalization"]["mean"]) == 22 and meta["traits"][0] == "extroversion"


def test_openface_folder_with_labels_gives_the_same_training(tiny_corpus, tmp_path):
    split = tmp_path / "split.csv"
    table = train(tiny_corpus, tmp_path / "t" / "m.pt", split=split)
    folder = run_script("attn_regression.py", tiny_corpus / "openface", "--labels", tiny_corpus / "labels.csv",
                        "-o", tmp_path / "f" / "m.pt", "--split", split, *FAST)
    assert table.returncode == 0 and folder.returncode == 0, folder.stderr
    a, b = epoch_metrics(tmp_path / "t" / "m.log.jsonl"), epoch_metrics(tmp_path / "f" / "m.log.jsonl")
    for x, y in zip(a, b):
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-6)


def test_resume_after_kill_gives_the_same_result(tiny_corpus, tmp_path):
    args = ["--epochs", "8", "--batch-size", "2", "--augment", *TINY_MODEL, "--split", tmp_path / "split.csv"]
    whole = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / "whole" / "m.pt", *args)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut" / "m.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "attn_regression.py"), str(tiny_corpus / "frames.csv"), "-o",
                             str(out), *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = out.with_name("m.log.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(log.read_text().splitlines())
    assert 3 <= done_at_kill < 8, "the run must be killed before it finished"
    resumed = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", out, "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert epoch_metrics(log) == epoch_metrics(tmp_path / "whole" / "m.log.jsonl")
    a, b = load_checkpoint(out).model.state_dict(), load_checkpoint(tmp_path / "whole" / "m.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_two_cpu_processes(tiny_corpus, tmp_path):
    result = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / "ddp.pt",
                        "--split", tmp_path / "split.csv", *FAST, torchrun=2)
    assert result.returncode == 0, result.stderr[-3000:]
    log = epoch_metrics(tmp_path / "ddp.log.jsonl")
    assert [row["epoch"] for row in log] == [1, 2, 3]
    assert result.stdout.count("epoch   1/3") == 1  # only rank 0 reports
    assert load_checkpoint(tmp_path / "ddp.pt").meta["train_options"]["epochs"] == 3


@pytest.mark.parametrize("kind", ["conv", "attention", "paper"])
def test_other_model_kinds_train(tiny_corpus, tmp_path, kind):
    result = train(tiny_corpus, tmp_path / f"{kind}.pt", "--model", kind, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / f"{kind}.pt").config.kind == kind


def test_training_bad_inputs(tiny_corpus, tmp_path):
    labels = tmp_path / "labels.csv"
    pd.DataFrame([{"File": "nobody.000.mp4", "extroversion": 0.5, "neuroticism": 0.5, "agreeableness": 0.5,
                   "conscientiousness": 0.5, "openness": 0.5}]).to_csv(labels, index=False)
    result = run_script("attn_regression.py", tiny_corpus / "openface", "--labels", labels, "-o", tmp_path / "m.pt")
    assert result.returncode == 1 and "no label matches any clip" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    groups = pd.read_csv(tiny_corpus / "labels.csv")["File"].str.split(".").str[0].unique()
    split = tmp_path / "all_test.csv"
    pd.DataFrame({"group": sorted(groups), "split": "test"}).to_csv(split, index=False)
    result = train(tiny_corpus, tmp_path / "m.pt", split=split)
    assert result.returncode == 1 and "the train split is empty" in result.stderr


def relabel(corpus, path) -> None:
    """New annotations: every trait rated higher and less spread, as a new group of annotators might."""
    labels = pd.read_csv(corpus / "labels.csv")
    traits = [c for c in labels.columns if c != "File"]
    labels[traits] = 0.45 + 0.5 * labels[traits]
    labels.to_csv(path, index=False)


def test_retrain_on_new_labels_lowers_held_out_loss(tiny_corpus, tmp_path):
    assert train(tiny_corpus, tmp_path / "m.pt").returncode == 0
    relabel(tiny_corpus, tmp_path / "new.csv")
    result = run_script("attn_retrain.py", tiny_corpus / "frames.csv", "--weights", tmp_path / "m.pt",
                        "--labels", tmp_path / "new.csv", "-o", tmp_path / "re.pt", "--epochs", "6", "--lr", "3e-3",
                        "--batch-size", "4", "--freeze", "attention")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "re.retrain.json").read_text())
    assert report["mse_after"] < report["mse_before"]
    assert "before retraining" in result.stdout and "after retraining" in result.stdout
    ckpt = load_checkpoint(tmp_path / "re.pt")
    assert ckpt.meta["retrained_from"] == str(tmp_path / "m.pt") and "retrain" in ckpt.meta
    before, after = load_checkpoint(tmp_path / "m.pt").model, ckpt.model
    assert torch.equal(before.au_emb.weight, after.au_emb.weight)  # frozen branch unchanged
    assert not torch.equal(before.convs[0].weight, after.convs[0].weight)


def test_retrain_from_paper_weights_and_feature_mismatch(tiny_corpus, tmp_path):
    from model import PaperNet, paper_config

    torch.manual_seed(0)
    torch.save(PaperNet(paper_config(17)).state_dict(), tmp_path / "au_180.pt")
    relabel(tiny_corpus, tmp_path / "new.csv")
    result = run_script("attn_retrain.py", tiny_corpus / "frames.csv", "--weights", tmp_path / "au_180.pt",
                        "--labels", tmp_path / "new.csv", "-o", tmp_path / "au_re.pt", "--epochs", "2",
                        "--split", tmp_path / "split.csv")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "au_re.pt").features[-1] == "AU45_r"
    torch.save(PaperNet(paper_config(22)).state_dict(), tmp_path / "p22.pt")
    au_only = tmp_path / "au_only.csv"
    table = pd.read_csv(tiny_corpus / "frames.csv")
    table.drop(columns=["gaze_angle_x", "gaze_angle_y"]).to_csv(au_only, index=False)
    result = run_script("attn_retrain.py", au_only, "--weights", tmp_path / "p22.pt", "-o", tmp_path / "x.pt")
    assert result.returncode == 1
    assert "missing gaze_angle_x, gaze_angle_y" in result.stderr and "p22.pt needs 22 features" in result.stderr
