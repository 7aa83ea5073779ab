"""attn_regression.py and attn_retrain.py end to end on the tiny synthetic corpus."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import training
from checkpoint import load_checkpoint, save_checkpoint
from conftest import ROOT, TINY_MODEL, one_line_error, process_env, run_process, run_script, set_cell, tree_digest
from dataset import SplitRecord, load_split
from model import paper_config
from paper_net import PaperNet


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
    assert not list((tmp_path / "a").glob("*.lock")) and not list((tmp_path / "a").glob(".*tmp"))
    second = train(tiny_corpus, tmp_path / "b" / "m.pt", split=tmp_path / "split.csv")
    assert second.returncode == 0 and "using split" in second.stdout
    assert epoch_metrics(tmp_path / "a" / "m.log.jsonl") == epoch_metrics(tmp_path / "b" / "m.log.jsonl")
    ckpt = load_checkpoint(tmp_path / "a" / "m.pt")
    assert ckpt.split.sha256 == __import__("hashlib").sha256((tmp_path / "split.csv").read_bytes()).hexdigest()
    assert len(ckpt.normalization.offset) == 22 and ckpt.traits[0] == "extroversion" and ckpt.seed == 0
    assert ckpt.data_fingerprint and ckpt.metrics["epoch"] >= 1 and ckpt.train_options["epochs"] == 3


def test_the_learning_curve_is_redrawn_at_most_every_interval_and_always_with_the_last_epoch(tmp_path, monkeypatch):
    """Epochs ending at 0, 10, 31, 45 and 70 s: drawn after the first, the third and the fifth (each at least
    CURVE_EVERY_S after the last drawing); at the end, nothing again for an epoch already drawn, and a sixth that
    is not yet drawn is drawn at once."""
    drawn = []
    monkeypatch.setattr(training, "plot_learning_curve", lambda history, path: drawn.append(len(history)))
    now = iter([0.0, 0.0, 10.0, 31.0, 31.0, 45.0, 70.0, 70.0, 71.0, 72.0])
    curve = training.CurveDrawer(tmp_path / "m.curve.png", clock=lambda: next(now))
    history = []
    for epoch in range(1, 6):
        history.append({"epoch": epoch})
        curve.draw(history, due_only=True)
    assert drawn == [1, 3, 5]
    curve.draw(history, due_only=False)
    assert drawn == [1, 3, 5]  # the last epoch is drawn already
    history.append({"epoch": 6})
    curve.draw(history, due_only=False)
    assert drawn == [1, 3, 5, 6]


def test_openface_folder_with_labels_gives_the_same_training(tiny_corpus, tmp_path):
    split = tmp_path / "split.csv"
    table = train(tiny_corpus, tmp_path / "t" / "m.pt", split=split)
    folder = run_script("attn_regression.py", tiny_corpus / "openface", "--labels", tiny_corpus / "labels.csv",
                        "-o", tmp_path / "f" / "m.pt", "--split", split, *FAST)
    assert table.returncode == 0 and folder.returncode == 0, folder.stderr
    a, b = epoch_metrics(tmp_path / "t" / "m.log.jsonl"), epoch_metrics(tmp_path / "f" / "m.log.jsonl")
    for x, y in zip(a, b):
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-6)


KILL_ARGS = ["--epochs", "6", "--batch-size", "2", "--augment", *TINY_MODEL]


@pytest.fixture(scope="module")
def uninterrupted(tiny_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    result = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", folder / "m.pt", "--split",
                        folder / "split.csv", *KILL_ARGS)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("epochs_done", [0, 2, 5])
def test_kill_9_then_resume_gives_the_uninterrupted_result(tiny_corpus, uninterrupted, tmp_path, epochs_done):
    out = tmp_path / "m.pt"
    args = [*KILL_ARGS, "--split", uninterrupted / "split.csv"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "attn_regression.py"), str(tiny_corpus / "frames.csv"), "-o",
                             str(out), *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=process_env())
    log = out.with_name("m.log.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = len(log.read_text().splitlines()) if log.exists() else 0
        if done >= epochs_done and out.with_name("m.pt.lock").exists():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(log.read_text().splitlines()) if log.exists() else 0
    assert killed_at < 6, "the run must be killed before it finished"
    resumed = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", out, "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert epoch_metrics(log) == epoch_metrics(uninterrupted / "m.log.jsonl")
    a, b = load_checkpoint(out).model.state_dict(), load_checkpoint(uninterrupted / "m.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_run_naming_the_difference(tiny_corpus, tmp_path):
    assert train(tiny_corpus, tmp_path / "m.pt").returncode == 0
    bigger = [a if a != "16" else "24" for a in FAST]
    result = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / "m.pt", "--split",
                        tmp_path / "split.csv", "--resume", *bigger)
    one_line_error(result, "m.last.pt: cannot resume: it is another run", "embed_dim: 16 -> 24")
    result = train(tiny_corpus, tmp_path / "m.pt", "--resume", "--lr", "0.5")
    one_line_error(result, "cannot resume", "lr: 0.001 -> 0.5")


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_corpus, tmp_path):
    result = run_process("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / "ddp.pt",
                         "--split", tmp_path / "split.csv", *FAST, torchrun=2)
    assert result.returncode == 0, result.stderr[-3000:]
    log = epoch_metrics(tmp_path / "ddp.log.jsonl")
    assert [row["epoch"] for row in log] == [1, 2, 3]
    assert result.stdout.count("epoch   1/3") == 1  # only rank 0 reports
    assert load_checkpoint(tmp_path / "ddp.pt").train_options["epochs"] == 3


@pytest.mark.parametrize("kind", ["conv", "attention", "paper"])
def test_other_model_kinds_train(tiny_corpus, tmp_path, kind):
    extra = ["--model", kind, "--epochs", "1"]
    if kind == "paper":
        result = run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / f"{kind}.pt",
                            "--split", tmp_path / "split.csv", "--epochs", "1", "--batch-size", "4", "--model", "paper")
    else:
        result = train(tiny_corpus, tmp_path / f"{kind}.pt", *extra)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / f"{kind}.pt").config.kind == kind


def test_training_bad_inputs(tiny_corpus, tmp_path):
    labels = tmp_path / "labels.csv"
    pd.DataFrame([{"File": "nobody.000.mp4", "extroversion": 0.5, "neuroticism": 0.5, "agreeableness": 0.5,
                   "conscientiousness": 0.5, "openness": 0.5}]).to_csv(labels, index=False)
    result = run_script("attn_regression.py", tiny_corpus / "openface", "--labels", labels, "-o", tmp_path / "m.pt")
    one_line_error(result, "no label matches any clip")
    groups = pd.read_csv(tiny_corpus / "labels.csv")["File"].str.split(".").str[0].unique()
    split = tmp_path / "all_test.csv"
    pd.DataFrame({"group": sorted(groups), "split": "test"}).to_csv(split, index=False)
    one_line_error(train(tiny_corpus, tmp_path / "m.pt", split=split), "the train split is empty")
    for flag in ("--epochs", "--patience", "--batch-size", "--min-frames"):
        one_line_error(train(tiny_corpus, tmp_path / "m.pt", flag, "0"), flag, "must be at least 1")
    one_line_error(run_script("attn_regression.py", tiny_corpus / "frames.csv", "-o", tmp_path / "m.pt", "--preset",
                              "paper", "--conv-channels", "8", "8", "8", "8"),
                   "conv width 8 is below the squeeze-excite reduction 16")
    one_line_error(train(tiny_corpus, tmp_path / "m.pt", "--conv-channels", "8", "8"),
                   "2 conv widths, 3 kernel widths and 3 dilations")
    assert not (tmp_path / "m.pt").exists()


def test_overflowing_values_stop_training_with_one_line(tiny_corpus, tmp_path):
    data = tmp_path / "frames.csv"
    data.write_bytes((tiny_corpus / "frames.csv").read_bytes())
    set_cell(data, 40, "AU12_r", "1e39")
    result = run_script("attn_regression.py", data, "-o", tmp_path / "m.pt", *FAST)
    one_line_error(result, "frames.csv: line 40, column AU12_r: value overflows 32-bit floats")
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.last.pt").exists()


def test_training_never_overwrites_an_input(tiny_corpus, tmp_path):
    data = tmp_path / "frames.csv"
    data.write_bytes((tiny_corpus / "frames.csv").read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_bytes((tiny_corpus / "labels.csv").read_bytes())
    (tmp_path / "hard.csv").hardlink_to(data)
    (tmp_path / "soft.csv").symlink_to(data)
    split = tmp_path / "s.csv"
    assert train(tiny_corpus, tmp_path / "m.pt", split=split).returncode == 0
    before = tree_digest(tmp_path)
    for output in (data, tmp_path / "hard.csv", tmp_path / "soft.csv"):
        one_line_error(run_script("attn_regression.py", data, "-o", output, *FAST), "is an input of this run")
    one_line_error(run_script("attn_regression.py", data, "-o", labels, "--labels", labels, *FAST), "is an input")
    one_line_error(run_script("attn_regression.py", data, "-o", split, "--split", split, *FAST), "is an input")
    assert tree_digest(tmp_path) == before


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
    assert ckpt.retrained_from == str(tmp_path / "m.pt") and ckpt.retrain["mse_after"] == report["mse_after"]
    before, after = load_checkpoint(tmp_path / "m.pt").model, ckpt.model
    assert torch.equal(before.members[0].au_emb.weight, after.members[0].au_emb.weight)  # frozen branch unchanged
    assert not torch.equal(before.members[0].convs[0].weight, after.members[0].convs[0].weight)
    one_line_error(run_script("attn_retrain.py", tiny_corpus / "frames.csv", "--weights", tmp_path / "m.pt",
                              "-o", tmp_path / "m.pt"), "m.pt: is an input of this run")


def test_a_checkpoint_never_makes_retraining_write_a_file(tiny_corpus, tmp_path):
    """The split path a checkpoint records is provenance: retraining uses the recorded assignment in memory."""
    assert train(tiny_corpus, tmp_path / "m.pt").returncode == 0
    ckpt = load_checkpoint(tmp_path / "m.pt")
    planted = tmp_path / "home" / ".bash_profile"
    ckpt.split = SplitRecord(str(planted), ckpt.split.sha256, ckpt.split.assignment)
    save_checkpoint(tmp_path / "shared.pt", ckpt)
    before = set(p for p in tmp_path.rglob("*"))
    result = run_script("attn_retrain.py", tiny_corpus / "frames.csv", "--weights", tmp_path / "shared.pt",
                        "-o", tmp_path / "out" / "re.pt", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert not planted.exists() and not planted.parent.exists()
    created = {p.relative_to(tmp_path).as_posix() for p in set(tmp_path.rglob("*")) - before}
    assert created == {"out", "out/re.pt", "out/re.last.pt", "out/re.log.jsonl", "out/re.curve.png",
                       "out/re.retrain.json"}


def test_retrain_from_paper_weights_and_feature_mismatch(tiny_corpus, tmp_path):
    torch.manual_seed(0)
    torch.save(PaperNet(paper_config(17)).state_dict(), tmp_path / "au_180.pt")
    relabel(tiny_corpus, tmp_path / "new.csv")
    result = run_script("attn_retrain.py", tiny_corpus / "frames.csv", "--weights", tmp_path / "au_180.pt",
                        "--labels", tmp_path / "new.csv", "-o", tmp_path / "au_re.pt", "--epochs", "2",
                        "--split", tmp_path / "split.csv")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "au_re.pt").features[-1] == "AU45_r"
    torch.save(PaperNet(paper_config(22)).state_dict(), tmp_path / "p22.pt")
    result = run_script("attn_retrain.py", tiny_corpus / "frames.csv", "--weights", tmp_path / "p22.pt",
                        "-o", tmp_path / "p22_re.pt", "--epochs", "1", "--split", tmp_path / "split.csv")
    assert result.returncode == 0, result.stderr
    retrained = load_checkpoint(tmp_path / "p22_re.pt")
    assert retrained.normalization.kind == "minmax"  # the paper's min-max, fixed on the training split
    train_groups = {g for g, s in load_split(tmp_path / "split.csv")[0].items() if s == "train"}
    frames = pd.read_csv(tiny_corpus / "frames.csv")
    train_rows = frames[frames["File"].str.split(".").str[0].isin(train_groups)]
    assert retrained.normalization.offset[-1] == pytest.approx(train_rows["pose_Rz"].min(), abs=1e-6)
    au_only = tmp_path / "au_only.csv"
    frames.drop(columns=["gaze_angle_x", "gaze_angle_y"]).to_csv(au_only, index=False)
    result = run_script("attn_retrain.py", au_only, "--weights", tmp_path / "p22.pt", "-o", tmp_path / "x.pt")
    one_line_error(result, "missing gaze_angle_x, gaze_angle_y", "p22.pt needs 22 features")


def test_a_trait_with_one_label_is_warned_about_and_logged_as_null(tiny_corpus, tmp_path):
    frames = pd.read_csv(tiny_corpus / "frames.csv")
    (tmp_path / "corpus").mkdir()
    frames.assign(openness=0.5).to_csv(tmp_path / "corpus" / "frames.csv", index=False)
    result = train(tmp_path / "corpus", tmp_path / "m.pt", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "warning: openness is 0.5 on every train clip" in result.stdout
    assert "warning: openness is 0.5 on every val clip" in result.stdout and "O n/a" in result.stdout
    assert "nan" not in result.stdout.lower()

    def refuse(token):
        raise AssertionError(f"{token} is not JSON")

    records = [json.loads(line, parse_constant=refuse) for line in (tmp_path / "m.log.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["val_r2"]["openness"] is None for r in records)
    assert all(isinstance(r["val_r2"]["extroversion"], float) for r in records)


@pytest.mark.parametrize("script", ["attn_regression.py", "data_augmentation.py"])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_partial_file(tiny_corpus, tmp_path, small_disk, script):
    disk, remount = small_disk
    remount("64k")
    if script == "attn_regression.py":
        result = train(tiny_corpus, disk / "m.pt", split=tmp_path / "split.csv")
    else:
        result = run_script(script, tiny_corpus / "frames.csv", "-o", disk / "augmented.csv")
    line = one_line_error(result, "No space left on device (the disk is full)")
    assert str(disk) in line and not list(disk.glob(".*.tmp")) and not list(disk.glob("*.lock"))
    assert not (disk / "augmented.csv").exists() and not (disk / "m.pt").exists()
