"""Evaluate checkpoints on the held-out test split, beside baselines, with bootstrap confidence intervals.

    python attn_test.py data/synthetic/frames.csv --weights weights/hybrid.pt -o results/
    python attn_test.py data/synthetic/frames.csv --weights weights/hybrid.pt weights/conv.pt weights/attention.pt -o results/

The test set is the test split of --split, else the split recorded in the first checkpoint, else the split file
beside the data; --whole evaluates every clip of DATA instead. Each checkpoint gets the input transform it is
deployed with (checkpoint.input_scaler). Baselines, always shown, fitted on the training split: the training-mean
predictor, ridge regression on per-clip mean and std of the features, MiniRocket + RidgeCV and QUANT + extra
trees (see baselines.py). Writes comparison.csv, metrics.csv, results.json, predictions_<model>.csv and plots.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from baselines import BASELINES, baseline_predictions
from checkpoint import Checkpoint, check_features, input_scaler, load_checkpoint
from cli import (Parser, add_device_option, add_labels_option, add_options, check_outputs, check_writable_folder,
                 options_from, report_user_errors)
from dataset import held_out_clips, labels_of, load_labelled_clips, predict
from distributed import resolve_device, use_all_cores
from metrics import METRICS, bootstrap_intervals, regression_table
from openface import TRAIT_LETTERS, TRAITS, Clip, ReadOptions, input_files
from plots import pyplot, save_figure
from tables import json_safe, write_table, write_text_atomic


@dataclass
class Evaluation:
    name: str
    pred: np.ndarray | None  # (N, 5); None for a baseline that could not run here
    table: pd.DataFrame  # traits + mean x METRICS
    low: pd.DataFrame
    high: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def leakage_note(ckpt: Checkpoint, test: Sequence[Clip]) -> str | None:
    """A warning when test clips' source videos were in the checkpoint's training or validation data."""
    if ckpt.split is None:
        return None
    seen = [c for c in test if ckpt.split.assignment.get(c.group) in ("train", "val")]
    if not seen:
        return None
    videos = len({c.group for c in seen})
    return (f"WARNING: {len(seen)} of {len(test)} test clips ({videos} source videos) were in this checkpoint's "
            f"training/validation data: its scores on them are not held-out")


def evaluate(name: str, pred: np.ndarray | None, test: Sequence[Clip], n_boot: int, seed: int) -> Evaluation:
    """Metrics with group-bootstrap intervals; an all-NaN row, noted, for a baseline that could not run."""
    truth = labels_of(test)
    if pred is None:
        empty = regression_table(truth, truth) * np.nan
        return Evaluation(name, None, empty, empty, empty, ["not installed (pip install aeon)"])
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
        if not np.isfinite(row["r2"]) and not np.isfinite(row["mae"]):
            lines.append(f"| {row['model']} | not installed (pip install aeon) |" + " |" * (len(header) - 2))
            continue
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
    plt = pyplot()
    fig, axes = plt.subplots(1, len(TRAITS), figsize=(4 * len(TRAITS), 4))
    for ax, (j, trait) in zip(axes, enumerate(TRAITS)):
        ax.scatter(truth[:, j], ev.pred[:, j], s=10, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="black", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="true", ylabel="predicted",
               title=f"{trait}\nR² {ev.table.loc[trait, 'r2']:+.3f}")
    fig.suptitle(f"{ev.name}: predicted vs true ({len(truth)} test clips)")
    fig.tight_layout()
    scatter = save_figure(fig, [out / f"pred_vs_true_{ev.name}.png"], dpi=100)[0]
    fig, axes = plt.subplots(1, len(TRAITS), figsize=(4 * len(TRAITS), 3.5), sharey=True)
    for ax, (j, trait) in zip(axes, enumerate(TRAITS)):
        ax.hist(ev.pred[:, j] - truth[:, j], bins=25, color="tab:gray")
        ax.axvline(0, color="black", linewidth=1)
        ax.set(xlabel="predicted − true", title=trait)
    axes[0].set_ylabel("test clips")
    fig.suptitle(f"{ev.name}: residuals ({len(truth)} test clips)")
    fig.tight_layout()
    return [scatter] + save_figure(fig, [out / f"residuals_{ev.name}.png"], dpi=100)


def plot_r2_bars(evals: Sequence[Evaluation], out: Path) -> Path:
    plt = pyplot()
    evals = [ev for ev in evals if ev.pred is not None]
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
    ax.set(ylabel="R² (95% bootstrap CI)", title=f"Held-out R² per trait ({len(evals[0].pred)} test clips)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, [out / "r2_by_trait.png"], dpi=110)[0]


def build_parser() -> Parser:
    parser = Parser(__doc__)
    parser.add_argument("data", nargs="+", help="combined frame table(s) and/or OpenFace CSV files or folders")
    parser.add_argument("--weights", nargs="+", type=Path, required=True, help="one or more checkpoints to compare")
    parser.add_argument("-o", "--output", type=Path, default=Path("results"), help="folder for tables and plots")
    parser.add_argument("--split", type=Path, default=None, help="split file whose test split to use")
    parser.add_argument("--whole", action="store_true", help="evaluate on every clip of DATA (a separate test set)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--seed", type=int, default=0, help="seeds the bootstrap and MiniRocket")
    parser.add_argument("--table-format", choices=("csv", "parquet"), default="csv",
                        help="format of comparison, metrics and predictions tables")
    add_labels_option(parser)
    add_device_option(parser)
    add_options(parser.add_argument_group("input"), ReadOptions)
    return parser


def written_files(out: Path, names: Sequence[str], table: str) -> list[Path]:
    """The tables and plots this script writes into the output folder."""
    fixed = [f"comparison.{table}", f"metrics.{table}", "results.json", "r2_by_trait.png"]
    per_model = [f"{kind}_{name}.{ext}" for name in names
                 for kind, ext in (("predictions", table), ("pred_vs_true", "png"), ("residuals", "png"))]
    return [out / name for name in fixed + per_model]


def predictions_table(test: Sequence[Clip], truth: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame({"clip_id": [c.clip_id for c in test], "File": [c.file for c in test],
                          "group": [c.group for c in test]})
    for j, trait in enumerate(TRAITS):
        table[f"true_{trait}"], table[f"pred_{trait}"] = truth[:, j], pred[:, j]
    return table


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = unique_names(args.weights) + [b.name for b in BASELINES]
    read_paths = [f.path for f in input_files(args.data)] + [Path(p) for p in args.labels or []] + list(args.weights)
    read_paths += [args.split] if args.split else []
    check_writable_folder(args.output)
    check_outputs(written_files(args.output, names, args.table_format), read_paths)
    use_all_cores()
    device = resolve_device(args.device)
    ckpts = [load_checkpoint(w, device) for w in args.weights]
    features = list(ckpts[0].features)
    for path, ckpt in zip(args.weights, ckpts):
        if list(ckpt.features) != features:
            check_features(ckpt, features, f"{path} (compared with {args.weights[0]})")
    clips, summary = load_labelled_clips(args.data, args.labels, features, options_from(args, ReadOptions))
    print(summary.render())
    recorded = next((c.split for c in ckpts if c.split is not None), None)
    chosen = held_out_clips(clips, recorded, args.split, args.whole, args.data[0])
    print(f"test set: {len(chosen.test)} clips from {len({c.group for c in chosen.test})} source videos, "
          f"from {chosen.source}")
    truth = labels_of(chosen.test)
    evals = []
    for name, ckpt in zip(unique_names(args.weights), ckpts):
        pred = predict(ckpt.model, chosen.test, input_scaler(ckpt, chosen.test), device=device)
        ev = evaluate(name, pred, chosen.test, args.bootstrap, args.seed)
        note = leakage_note(ckpt, chosen.test)
        if note:
            ev.notes.append(note)
            print(f"\n!!! {name}: {note}\n", file=sys.stderr)
        evals.append(ev)
    reference = None
    if chosen.train:
        for name, pred in baseline_predictions(chosen.train, chosen.test, features, args.seed).items():
            evals.append(evaluate(name, pred, chosen.test, args.bootstrap, args.seed))
        reference = float(next(ev for ev in evals if ev.name == "train-mean").table.loc["mean", "acc"])
    else:
        print("no training split: baselines skipped (they are fitted on training clips)")
    frame = comparison_frame(evals)
    print("\n" + markdown_table(frame, reference))
    ext = args.table_format
    write_table(frame, args.output / f"comparison.{ext}")
    write_table(long_metrics(evals), args.output / f"metrics.{ext}")
    plots = [plot_r2_bars(evals, args.output)]
    for ev in evals:
        if ev.pred is None:
            continue
        write_table(predictions_table(chosen.test, truth, ev.pred), args.output / f"predictions_{ev.name}.{ext}")
        plots += plot_predictions(ev, truth, args.output)
    results = {"test_set": {"source": chosen.source, "clips": len(chosen.test),
                            "groups": len({c.group for c in chosen.test})},
               "models": {ev.name: {"metrics": ev.table.to_dict(orient="index"), "low": ev.low.to_dict(orient="index"),
                                    "high": ev.high.to_dict(orient="index"), "notes": ev.notes} for ev in evals},
               "weights": {name: str(p) for name, p in zip(unique_names(args.weights), args.weights)}}
    write_text_atomic(args.output / "results.json",
                      json.dumps(json_safe(results), indent=2, default=float, allow_nan=False) + "\n")
    print(f"\nwrote {args.output}/comparison.{ext}, metrics.{ext}, results.json, predictions_*.{ext} and "
          f"{len(plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
