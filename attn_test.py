"""Evaluate checkpoints on the held-out test split, beside baselines, with bootstrap confidence intervals.

    python attn_test.py data/synthetic/frames.csv --weights weights/hybrid.pt -o results/
    python attn_test.py data/synthetic/frames.csv --weights weights/hybrid.pt weights/conv.pt weights/attention.pt -o results/

The test set is the test split of --split, else the split recorded in the first checkpoint, else the split file
beside the data; --whole evaluates every clip of DATA instead. Baselines, always shown: the training-mean
predictor and ridge regression on per-clip mean and std of the features (alpha chosen by cross-validation on
the training split). Writes comparison.csv, metrics.csv, results.json, predictions_<model>.csv and plots.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cli import add_device_arg, add_reading_args, reading_options, report_user_errors, resolve_device, use_all_cores
from dataset import Scaler, held_out_clips, predict
from metrics import METRICS, bootstrap_intervals, regression_table
from model import Checkpoint, check_features, load_checkpoint
from openface import TRAIT_LETTERS, TRAITS, Clip
from training import load_labelled_clips


@dataclass
class Evaluation:
    name: str
    pred: np.ndarray  # (N, 5)
    table: pd.DataFrame  # traits + mean x METRICS
    low: pd.DataFrame
    high: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def leakage_note(ckpt: Checkpoint, test: Sequence[Clip]) -> str | None:
    """A warning when test clips' source videos were in the checkpoint's training or validation data."""
    assignment = ckpt.meta.get("split", {}).get("assignment")
    if assignment is None:
        return None
    seen = [c for c in test if assignment.get(c.group) in ("train", "val")]
    if not seen:
        return None
    videos = len({c.group for c in seen})
    return (f"WARNING: {len(seen)} of {len(test)} test clips ({videos} source videos) were in this checkpoint's "
            f"training/validation data: its scores on them are not held-out")


def clip_statistics(clips: Sequence[Clip]) -> np.ndarray:
    """(N, 2F): per-clip mean and std of every feature."""
    return np.stack([np.r_[c.frames.mean(axis=0), c.frames.std(axis=0)] for c in clips])


def baseline_predictions(train: Sequence[Clip], test: Sequence[Clip], seed: int) -> dict[str, np.ndarray]:
    """The training-mean predictor and cross-validated ridge on clip statistics."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_train = np.stack([c.label for c in train])
    mean = np.repeat(y_train.mean(axis=0, keepdims=True), len(test), axis=0)
    folds = min(5, len(train))
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15), cv=folds if folds >= 2 else None))
    ridge.fit(clip_statistics(train), y_train)
    return {"train-mean": mean, "ridge": np.clip(ridge.predict(clip_statistics(test)), 0, 1)}


def evaluate(name: str, pred: np.ndarray, test: Sequence[Clip], n_boot: int, seed: int) -> Evaluation:
    truth = np.stack([c.label for c in test])
    ci = bootstrap_intervals(truth, pred, [c.group for c in test], n_boot=n_boot, seed=seed)
    return Evaluation(name, pred, regression_table(truth, pred), ci["low"], ci["high"])


def unique_names(paths: Sequence[Path]) -> list[str]:
    names, seen = [], {}
    for path in paths:
        name = path.with_suffix("").name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def comparison_frame(evals: Sequence[Evaluation]) -> pd.DataFrame:
    rows = []
    for ev in evals:
        row = {"model": ev.name}
        for metric in ("r2", "acc", "mae", "pearson", "ccc"):
            row[metric] = ev.table.loc["mean", metric]
            row[f"{metric}_low"], row[f"{metric}_high"] = ev.low.loc["mean", metric], ev.high.loc["mean", metric]
        for trait in TRAITS:
            row[f"r2_{trait}"] = ev.table.loc[trait, "r2"]
        rows.append(row)
    return pd.DataFrame(rows)


def number(value: float, spec: str) -> str:
    return "n/a" if not np.isfinite(value) else format(value, spec)


def markdown_table(frame: pd.DataFrame, reference: float | None) -> str:
    header = ["model", "R² mean [95% CI]", "1−MAE", "gain vs mean", "MAE", "r", "CCC"] + \
             [f"R² {TRAIT_LETTERS[t]}" for t in TRAITS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        gain = "" if reference is None else f"{row['acc'] - reference:+.4f}"
        cells = [row["model"], f"{number(row['r2'], '+.3f')} [{number(row['r2_low'], '+.3f')}, "
                 f"{number(row['r2_high'], '+.3f')}]", number(row["acc"], ".4f"), gain, number(row["mae"], ".4f"),
                 number(row["pearson"], ".3f"), number(row["ccc"], ".3f")]
        cells += [number(row[f"r2_{t}"], "+.3f") for t in TRAITS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def long_metrics(evals: Sequence[Evaluation]) -> pd.DataFrame:
    rows = []
    for ev in evals:
        for trait in list(TRAITS) + ["mean"]:
            for metric in METRICS:
                rows.append({"model": ev.name, "trait": trait, "metric": metric, "value": ev.table.loc[trait, metric],
                             "low": ev.low.loc[trait, metric], "high": ev.high.loc[trait, metric]})
    return pd.DataFrame(rows)


def plot_predictions(ev: Evaluation, truth: np.ndarray, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TRAITS), figsize=(4 * len(TRAITS), 4))
    for ax, (j, trait) in zip(axes, enumerate(TRAITS)):
        ax.scatter(truth[:, j], ev.pred[:, j], s=10, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="black", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="true", ylabel="predicted",
               title=f"{trait}\nR² {ev.table.loc[trait, 'r2']:+.3f}")
    fig.suptitle(f"{ev.name}: predicted vs true")
    fig.tight_layout()
    scatter = out / f"pred_vs_true_{ev.name}.png"
    fig.savefig(scatter, dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(TRAITS), figsize=(4 * len(TRAITS), 3.5), sharey=True)
    for ax, (j, trait) in zip(axes, enumerate(TRAITS)):
        ax.hist(ev.pred[:, j] - truth[:, j], bins=25, color="tab:gray")
        ax.axvline(0, color="black", linewidth=1)
        ax.set(xlabel="predicted − true", title=trait)
    fig.suptitle(f"{ev.name}: residuals")
    fig.tight_layout()
    residuals = out / f"residuals_{ev.name}.png"
    fig.savefig(residuals, dpi=100)
    plt.close(fig)
    return [scatter, residuals]


def plot_r2_bars(evals: Sequence[Evaluation], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(TRAITS) + ["mean"]
    width = 0.8 / len(evals)
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 0.5 * len(evals), 4.5))
    for k, ev in enumerate(evals):
        x = np.arange(len(labels)) + (k - (len(evals) - 1) / 2) * width
        value = ev.table.loc[labels, "r2"].to_numpy()
        err = np.abs(np.vstack([value - ev.low.loc[labels, "r2"], ev.high.loc[labels, "r2"] - value]))
        ax.bar(x, value, width, yerr=err, capsize=2, label=ev.name)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set(ylabel="R² (95% bootstrap CI)", title="Held-out R² per trait")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "r2_by_trait.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="combined frame table(s) and/or OpenFace CSV files or folders")
    parser.add_argument("--weights", nargs="+", type=Path, required=True, help="one or more checkpoints to compare")
    parser.add_argument("-o", "--output", type=Path, default=Path("results"), help="folder for tables and plots")
    parser.add_argument("--split", type=Path, default=None, help="split file whose test split to use")
    parser.add_argument("--whole", action="store_true", help="evaluate on every clip of DATA (a separate test set)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--seed", type=int, default=0, help="seeds the bootstrap")
    add_device_arg(parser)
    add_reading_args(parser)
    return parser


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_all_cores()
    device = resolve_device(args.device)
    ckpts = [load_checkpoint(w, device) for w in args.weights]
    features = ckpts[0].features
    for path, ckpt in zip(args.weights, ckpts):
        if ckpt.features != features:
            check_features(ckpt, features, f"{path} (compared with {args.weights[0]})")
    clips, summary = load_labelled_clips(args.data, args.labels, features, reading_options(args))
    print(summary.render())
    recorded = next((c.meta["split"] for c in ckpts if "split" in c.meta), None)
    chosen = held_out_clips(clips, recorded, args.split, args.whole, args.data[0])
    print(f"test set: {len(chosen.test)} clips from {len({c.group for c in chosen.test})} source videos, "
          f"from {chosen.source}")
    truth = np.stack([c.label for c in chosen.test])
    evals = []
    for name, ckpt in zip(unique_names(args.weights), ckpts):
        scaler = Scaler.from_dict(ckpt.meta.get("normalization", {}), len(features))
        ev = evaluate(name, predict(ckpt.model, chosen.test, scaler, 64, device), chosen.test, args.bootstrap, args.seed)
        note = leakage_note(ckpt, chosen.test)
        if note:
            ev.notes.append(note)
            print(f"\n!!! {name}: {note}\n", file=sys.stderr)
        evals.append(ev)
    reference = None
    if chosen.train:
        for name, pred in baseline_predictions(chosen.train, chosen.test, args.seed).items():
            evals.append(evaluate(name, pred, chosen.test, args.bootstrap, args.seed))
        reference = float(next(ev for ev in evals if ev.name == "train-mean").table.loc["mean", "acc"])
    else:
        print("no training split: baselines skipped (they are fitted on training clips)")
    args.output.mkdir(parents=True, exist_ok=True)
    frame = comparison_frame(evals)
    print("\n" + markdown_table(frame, reference))
    frame.to_csv(args.output / "comparison.csv", index=False)
    long_metrics(evals).to_csv(args.output / "metrics.csv", index=False)
    plots = [plot_r2_bars(evals, args.output)]
    for ev in evals:
        table = pd.DataFrame({"clip_id": [c.clip_id for c in chosen.test], "File": [c.file for c in chosen.test],
                              "group": [c.group for c in chosen.test]})
        for j, trait in enumerate(TRAITS):
            table[f"true_{trait}"], table[f"pred_{trait}"] = truth[:, j], ev.pred[:, j]
        table.to_csv(args.output / f"predictions_{ev.name}.csv", index=False)
        plots += plot_predictions(ev, truth, args.output)
    results = {"test_set": {"source": chosen.source, "clips": len(chosen.test),
                            "groups": len({c.group for c in chosen.test})},
               "models": {ev.name: {"metrics": ev.table.to_dict(orient="index"), "low": ev.low.to_dict(orient="index"),
                                    "high": ev.high.to_dict(orient="index"), "notes": ev.notes} for ev in evals},
               "weights": {name: str(p) for name, p in zip(unique_names(args.weights), args.weights)}}
    (args.output / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"\nwrote {args.output}/comparison.csv, metrics.csv, results.json, predictions_*.csv and {len(plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
