"""The network against the baselines on synthetic corpora with planted signals, end to end, with default flags.

    python compare.py --quick                      # one 300-clip corpus per recipe (about 35 minutes on 2 cores)
    python compare.py -o main                      # 300 / 1,000 / 3,000 clips, 2 seeds (hours on 2 cores)
    python compare.py --recipes fi --seeds 2 3 4 -o more
    python compare.py --tables main/comparison.csv more/comparison.csv -o docs/comparison   # the README table

For each recipe, size and seed it writes a corpus with data/synthetic/prepare.py's generator, splits it by source
video (85 % training, 15 % validation), trains the default network exactly as attn_regression.py does, fits the
baselines of attn_test.py (training mean, ridge on clip statistics, MiniRocket, QUANT) on the same training
clips, and scores everything on an independent test corpus of the same recipe (--test-clips clips of other
people): held-out R² per trait, and the mean R² over the predictable traits as a share of the best achievable
there (the R² of the noise-free signal), each with a 95 % bootstrap interval over the test corpus's source
videos, and the network's margin over the best peer per trait with an interval over the same resamples (paired).
Writes comparison.csv (one row per corpus and method), comparison.md (the table) and comparison.png.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from baselines import BASELINES, PEERS, baseline_predictions
from checkpoint import input_scaler, load_checkpoint
from cli import Parser, check_outputs, check_writable_folder, report_user_errors
from data.synthetic import prepare
from dataset import Normalization, SplitData, SplitRecord, assign_splits, labels_of, predict, split_clips
from distributed import Distributed, use_all_cores
from errors import DataError
from metrics import bootstrap_samples, metric_arrays, percentile_interval
from model import ModelConfig, build_model
from openface import FEATURE_COLUMNS, TRAIT_LETTERS, TRAITS, Clip
from paper_net import PAPER_ARCHITECTURE
from plots import pyplot, save_figure
from tables import first_line, write_table, write_text_atomic
from training import Run, RunOutputs, TrainOptions, fit

RECIPE_NOTES = {
    "standard": "means, spreads, nod -> smile order 2 s apart (agreeableness); the default corpus",
    "short-gap": "the order 12 frames apart; openness pure noise",
    "reaction": "a second time scale: openness is the 1-4 s delay of a look after a nod",
    "fi": "First-Impressions-like noise (best achievable R² 0.25), the order 12 frames apart",
}  # what the recipes without zoo kinds plant
RECIPES: dict[str, dict] = {
    "standard": {},
    "short-gap": {"pair_gap": 12, "openness": "noise"},
    "reaction": {"openness": "reaction"},
    "fi": {"snr": "fi", "pair_gap": 12},
    "zoo-a": {"kinds": ("co-occurrence", "jerkiness", "lead-lag", "inverted-u", "noise")},
    "zoo-b": {"kinds": ("rhythm", "burst-duration", "trend", "threshold", "rare-events")},
    "zoo-b-fi": {"snr": "fi", "kinds": ("rare-events", "threshold", "burst-duration", "trend", "rhythm")},
    "zoo-c": {"kinds": ("skew", "peak-time", "synchrony", "tremor", "envelope")},
    "zoo-c-fi": {"snr": "fi", "kinds": ("envelope", "tremor", "skew", "synchrony", "peak-time")},
    "zoo-d": {"kinds": ("onset", "regularity", "bimodality", "amplitude-coupling", "stillness")},
    "zoo-d-fi": {"snr": "fi", "kinds": ("stillness", "amplitude-coupling", "onset", "bimodality", "regularity")},
    "zoo-e": {"kinds": ("interaction", "chirp", "spread-trend", "tails", "noise")},
    "zoo-e-fi": {"snr": "fi", "kinds": ("tails", "noise", "interaction", "spread-trend", "chirp")},
    "zoo-f": {"kinds": ("anti-phase", "jitter", "undershoot", "step", "motif")},
    "zoo-f-fi": {"snr": "fi", "kinds": ("step", "motif", "anti-phase", "undershoot", "jitter")},
    "zoo-g": {"kinds": ("coupling-change", "echo", "height-spread", "plateau", "frequency-ratio")},
    "zoo-g-fi": {"snr": "fi", "kinds": ("plateau", "frequency-ratio", "coupling-change", "height-spread", "echo")},
    "zoo-h": {"kinds": ("duration-spread", "clustering", "spectral-slope", "rate-trend", "phase-offset")},
    "zoo-h-fi": {"snr": "fi",
                 "kinds": ("rate-trend", "phase-offset", "duration-spread", "spectral-slope", "clustering")},
    "zoo-i": {"kinds": ("height-duration", "bandwidth", "self-modulation", "inhibition", "arch")},
    "zoo-i-fi": {"snr": "fi", "kinds": ("arch", "inhibition", "height-duration", "bandwidth", "self-modulation")},
    "zoo-j": {"kinds": ("triad", "velocity-coupling", "ceiling", "saccades", "habituation")},
    "zoo-j-fi": {"snr": "fi", "kinds": ("saccades", "habituation", "triad", "ceiling", "velocity-coupling")},
    "zoo-k": {"kinds": ("answer-gain", "aversion", "persistence", "after-turn", "refractory")},
    "zoo-k-fi": {"snr": "fi", "kinds": ("persistence", "refractory", "answer-gain", "after-turn", "aversion")},
    "zoo-l": {"kinds": ("focus", "turned-expression", "eye-head-latency", "home-gaze", "alternation")},
    "zoo-l-fi": {"snr": "fi", "kinds": ("home-gaze", "alternation", "focus", "eye-head-latency", "turned-expression")},
    "zoo-m": {"kinds": ("either-way-follow", "turn-point", "locked-any-lag", "posture-context", "height-alternation")},
    "zoo-m-fi": {"snr": "fi",
                 "kinds": ("posture-context", "height-alternation", "either-way-follow", "turn-point", "locked-any-lag")},
    "zoo-n": {"kinds": ("head-shake", "phase-locking", "onset-asynchrony", "anticipatory-stillness",
                        "interval-alternation")},
    "zoo-n-fi": {"snr": "fi", "kinds": ("anticipatory-stillness", "interval-alternation", "head-shake", "phase-locking",
                                        "onset-asynchrony")},
}  # prepare.generate's arguments
HELD_OUT = ("zoo-h", "zoo-h-fi", "zoo-n", "zoo-n-fi")  # recipes whose kinds no design choice has looked at
# the kinds design choices were made on: those the first recipes plant, and those of the zoo recipes not held out
SEEN_KINDS = ("level", "spread", "order", "slow-delay",
              *dict.fromkeys(k for name in RECIPES if name not in HELD_OUT
                              for k in RECIPES[name].get("kinds", ())))
METHODS: tuple[str, ...] = ("network", *(b.name for b in BASELINES))
TITLES: dict[str, str] = {b.name: b.title for b in BASELINES}
TEST_SEED_OFFSET = 10_000
PREVIOUS = "previous demo network"  # the hybrid of the paper's architecture with the demo's sizes before this default
PREVIOUS_CONFIG = ModelConfig(**{**PAPER_ARCHITECTURE, "embed_dim": 128, "lstm_hidden": 128, "attn_dim": 128,
                                 "attn_hops": 16, "conv_channels": (32, 64, 64, 64)})
PREVIOUS_OPTIONS = TrainOptions(batch_size=32, lr=2e-3, epochs=30, patience=10)


def corpus(n_clips: int, seed: int, recipe: str) -> tuple[list[Clip], dict]:
    """A synthetic corpus as labelled clips, with its truth record (best achievable R² per trait)."""
    generated, truth = prepare.generate(n_clips, 4, seed, **RECIPES[recipe])
    return prepare.labelled_clips(generated), truth


def train_network(train: Sequence[Clip], val: Sequence[Clip], seed: int, epochs: int | None, folder: Path,
                  config: ModelConfig = ModelConfig(), options: TrainOptions = TrainOptions()
                  ) -> tuple[torch.nn.Module, object, float]:
    """A network (the default one) trained as attn_regression.py trains it; returns it, its checkpoint, seconds."""
    torch.manual_seed(seed)
    options = dataclasses.replace(options, seed=seed, **({"epochs": epochs} if epochs else {}))
    record = SplitRecord("in memory", "", {**{c.group: "train" for c in train}, **{c.group: "val" for c in val}})
    split = SplitData({"train": list(train), "val": list(val), "test": []}, record, True)
    run = Run(build_model(config), config, FEATURE_COLUMNS, split, Normalization.fit("standard", train, FEATURE_COLUMNS),
              options, RunOutputs.beside(folder / "net.pt"), torch.device("cpu"), Distributed())
    started = time.perf_counter()
    fit(run)
    seconds = time.perf_counter() - started
    best = load_checkpoint(run.outputs.best)
    return best.model, best, seconds


def evaluate_corpus(recipe: str, n_clips: int, seed: int, test_clips: int, epochs: int | None, n_boot: int,
                    previous: bool = False) -> list[dict]:
    """One row per method: R² per trait on the independent test corpus, the mean over predictable traits with a
    bootstrap interval, its share of the best achievable, and the training seconds."""
    clips, _ = corpus(n_clips, seed, recipe)
    test, truth = corpus(test_clips, seed + TEST_SEED_OFFSET, recipe)
    parts = split_clips(clips, assign_splits([c.group for c in clips], seed, (0.85, 0.15, 0.0)), "corpus")
    best = np.array([truth["traits"][t]["best_r2"] for t in TRAITS])
    predictable = np.array([truth["traits"][t]["planted_r2"] > 0 for t in TRAITS])
    seconds: dict[str, float] = {}
    predictions: dict[str, np.ndarray | None] = {}
    networks = [("network", ModelConfig(), TrainOptions())] + ([(PREVIOUS, PREVIOUS_CONFIG, PREVIOUS_OPTIONS)]
                                                                if previous else [])
    for name, config, options in networks:
        with tempfile.TemporaryDirectory() as folder:
            model, ckpt, seconds[name] = train_network(parts["train"], parts["val"], seed, epochs, Path(folder), config,
                                                       options)
            predictions[name] = predict(model, test, input_scaler(ckpt, test))
    predictions.update(baseline_predictions(parts["train"], test, FEATURE_COLUMNS, seed))
    y, groups = labels_of(test), [c.group for c in test]
    ran = {method: pred for method, pred in predictions.items() if pred is not None}
    r2s = {method: metric_arrays(y, pred)["r2"] for method, pred in ran.items()}  # (5,) each
    samples = {method: bootstrap_samples(y, pred, groups, n_boot, seed)["r2"]
               for method, pred in ran.items()}  # (n_boot, 5) each, on the same resamples of the test source videos
    rows = []
    for method in [name for name, _, _ in networks] + list(METHODS[1:]):
        pred = predictions[method]
        row = {"recipe": recipe, "clips": n_clips, "seed": seed, "method": method,
               "train_seconds": seconds.get(method, np.nan)}
        if pred is None:
            rows.append({**row, "note": "not installed"})
            continue
        r2 = r2s[method]
        low, high = percentile_interval(samples[method])
        mean_low, mean_high = percentile_interval(samples[method][:, predictable].mean(axis=1))
        row.update({f"r2_{t}": float(v) for t, v in zip(TRAITS, r2)})
        row.update({"r2_predictable": float(r2[predictable].mean()), "r2_low": float(mean_low),
                    "r2_high": float(mean_high),
                    "share_of_best": float(r2[predictable].mean() / best[predictable].mean()),
                    **{f"r2_low_{t}": float(v) for t, v in zip(TRAITS, low)},
                    **{f"r2_high_{t}": float(v) for t, v in zip(TRAITS, high)}})
        if method in seconds:  # a network trained here
            row.update(margin_intervals(samples, r2s, method))
        rows.append(row)
    rows.append({"recipe": recipe, "clips": n_clips, "seed": seed, "method": "best achievable",
                 **{f"r2_{t}": float(v) for t, v in zip(TRAITS, best)},
                 "r2_predictable": float(best[predictable].mean()), "share_of_best": 1.0})
    return rows


def margin_intervals(samples: dict[str, np.ndarray], r2s: dict[str, np.ndarray], method: str) -> dict[str, float]:
    """{margin_low_<trait>, margin_high_<trait>}: the 95 % interval of a network's R² minus that of the peer
    (baselines.PEERS that ran: those in r2s, each method's R² per trait on the whole test corpus) with the highest R²
    on the trait, over paired resamples of the test videos (samples: (n_boot, 5) per method)."""
    peers = [m for m in PEERS if m in r2s]
    if not peers:
        return {}
    r2 = np.stack([r2s[m] for m in peers])  # (P, 5)
    leader = np.where(np.isnan(r2), -np.inf, r2).argmax(axis=0)  # (5,)
    best = np.stack([samples[m] for m in peers])[leader, :, np.arange(len(TRAITS))].T  # (n_boot, 5)
    low, high = percentile_interval(samples[method] - best)
    return {**{f"margin_low_{t}": float(v) for t, v in zip(TRAITS, low)},
            **{f"margin_high_{t}": float(v) for t, v in zip(TRAITS, high)}}


def mean_over_seeds_interval(lows: np.ndarray, highs: np.ndarray) -> tuple[float, float]:
    """The 95 % interval of a mean over seeds (each with its own test corpus, so independent) from each seed's:
    centred on the mean of their midpoints, its half-width the root of the summed squared half-widths over the
    number of seeds (a normal approximation); one seed's interval as it is."""
    lows, highs = np.asarray(lows, float), np.asarray(highs, float)
    centre = ((lows + highs) / 2).mean()
    half = np.sqrt((((highs - lows) / 2) ** 2).sum()) / len(lows)
    return float(centre - half), float(centre + half)


PREDICTABLE_R2 = 0.05  # a trait whose best achievable R² is above this carries a planted signal


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per corpus recipe and size: each method's share of the best achievable (mean over seeds), the network's
    lowest margin over the best of its peers (baselines.PEERS that ran) on any predictable trait and seed (the trait
    named, with that seed's interval where the table has it), and its lowest R² on traits that are pure noise."""
    rows = []
    for (recipe, clips), runs in table.groupby(["recipe", "clips"], sort=False):
        by_method = runs.groupby("method")["share_of_best"].mean()
        row = {"recipe": recipe, "clips": clips,
               **{f"share_{m}": by_method.get(m, np.nan) for m in ("network", PREVIOUS, *PEERS)}}
        margins, noise = [], []
        for _, run in runs.groupby("seed"):
            methods = run.set_index("method")
            r2 = methods[[f"r2_{t}" for t in TRAITS]].set_axis(list(TRAITS), axis=1)
            peers = [m for m in PEERS if m in r2.index and r2.loc[m].notna().all()]
            if "network" not in r2.index or "best achievable" not in r2.index or not peers:
                continue
            better = r2.loc[peers].max()
            signal = r2.loc["best achievable"] > PREDICTABLE_R2
            margins += [(r2.loc["network", t] - better[t], t, *saved_margin_interval(methods.loc["network"], t))
                        for t in TRAITS if signal[t]]
            noise += [r2.loc["network", t] for t in TRAITS if not signal[t]]
        if margins:
            row["lowest_margin"], row["margin_trait"], row["margin_low"], row["margin_high"] = min(margins)
        row["lowest_noise_r2"] = min(noise) if noise else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def saved_margin_interval(network: pd.Series, trait: str) -> tuple[float, float]:
    """A network row's interval of its margin over the best peer on a trait; NaN in a table saved without it."""
    return network.get(f"margin_low_{trait}", np.nan), network.get(f"margin_high_{trait}", np.nan)


def interval_text(low: float, high: float) -> str:
    return "" if pd.isna(low) else f" [{low:+.3f}, {high:+.3f}]"


def percent(share: float) -> str:
    return "" if pd.isna(share) else f"{100 * share:.0f} %"


def verdict_markdown(table: pd.DataFrame) -> str:
    verdict = verdicts(table)
    previous = verdict[f"share_{PREVIOUS}"].notna().any()
    header = ["corpus", "clips", "network", *(["previous demo network"] if previous else []),
              *(TITLES[m] for m in PEERS), "network - best baseline, lowest trait [95% CI]",
              "network R² on pure noise"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in verdict.iterrows():
        margin = "" if pd.isna(row.get("lowest_margin")) else \
            f"{row['lowest_margin']:+.3f} ({TRAIT_LETTERS[row['margin_trait']]})" + \
            interval_text(row["margin_low"], row["margin_high"])
        noise = "" if pd.isna(row["lowest_noise_r2"]) else f"{row['lowest_noise_r2']:+.3f}"
        cells = [row["recipe"], f"{row['clips']:,}", percent(row["share_network"]),
                 *([percent(row[f"share_{PREVIOUS}"])] if previous else []),
                 *(percent(row[f"share_{m}"]) for m in PEERS), margin, noise]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_kind(table: pd.DataFrame) -> pd.DataFrame:
    """The zoo recipes' R² per signal kind (each trait of a zoo corpus follows one kind): one row per kind and size,
    a column per method (mean over seeds), with the kind's best achievable, whether the network's design has seen it,
    the network's margin over the best peer of each seed (mean over seeds), and the 95 % intervals of the network's
    R² and of that margin where the table has them (network_low/high, margin_low/high; over seeds,
    mean_over_seeds_interval)."""
    rows = []
    for _, row in table[table["recipe"].map(lambda r: "kinds" in RECIPES.get(r, {}))].iterrows():
        for trait, kind in zip(TRAITS, RECIPES[row["recipe"]]["kinds"]):
            rows.append({"kind": kind, "seen": kind in SEEN_KINDS, "snr": RECIPES[row["recipe"]].get("snr", "strong"),
                         "recipe": row["recipe"], "clips": row["clips"], "seed": row["seed"], "method": row["method"],
                         "r2": row[f"r2_{trait}"],
                         **{f"{name}_{side}": row.get(f"{column}_{side}_{trait}", np.nan)
                            for name, column in (("network", "r2"), ("margin", "margin")) for side in ("low", "high")}})
    if not rows:
        return pd.DataFrame()
    keys = ["seen", "kind", "snr", "clips"]
    frame = pd.DataFrame(rows)
    kinds = frame.groupby([*keys, "method"], sort=False)["r2"].mean().unstack("method")
    network_runs = frame[frame["method"] == "network"]
    run_keys = [*keys, "recipe", "seed"]  # one corpus (a kind such as noise is in several recipes)
    best_peer = frame[frame["method"].isin(PEERS)].groupby(run_keys)["r2"].max()
    network_r2 = network_runs.set_index(run_keys)["r2"]
    kinds["margin"] = (network_r2 - best_peer.reindex(network_r2.index)).groupby(level=keys).mean()
    network = network_runs.groupby(keys, sort=False)
    for name in ("network", "margin"):
        bounds = network.apply(lambda runs: pd.Series(
            mean_over_seeds_interval(runs[f"{name}_low"], runs[f"{name}_high"]), index=["low", "high"]))
        kinds[[f"{name}_low", f"{name}_high"]] = bounds.reindex(kinds.index).to_numpy() if len(bounds) else np.nan
    return kinds.reset_index().sort_values(["seen", "snr", "kind", "clips"], kind="stable")


def kind_markdown(table: pd.DataFrame) -> str:
    """Per signal kind: each method's held-out R² and the network's margin over the best peer, with their 95 %
    intervals where the table has them; the kinds no design choice has looked at first."""
    kinds = by_kind(table)
    if kinds.empty:
        return ""
    methods = [m for m in ("network", *PEERS, "best achievable") if m in kinds.columns]
    header = ["kind", "seen in design", "noise", "clips", *(TITLES.get(m, m) for m in methods), "network - best peer"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in kinds.iterrows():
        margin = "" if pd.isna(row["margin"]) else \
            f"{row['margin']:+.3f}" + interval_text(row["margin_low"], row["margin_high"])
        cells = [row["kind"], "yes" if row["seen"] else "no", row["snr"], f"{row['clips']:,}",
                 *(f"{row[m]:+.3f}" + (interval_text(row["network_low"], row["network_high"]) if m == "network" else "")
                   if pd.notna(row[m]) else "" for m in methods), margin]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(table: pd.DataFrame) -> str:
    """The verdict per corpus (shares of the best achievable, mean over seeds; worst cases over seeds), then R² per
    trait and method, mean over seeds."""
    header = ["recipe", "clips", "method", *[f"R² {TRAIT_LETTERS[t]}" for t in TRAITS], "R² predictable [95% CI]",
              "% of best", "train s"]
    kinds = kind_markdown(table)
    lines = [verdict_markdown(table), *(["", kinds] if kinds else []), "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    numeric = [f"r2_{t}" for t in TRAITS] + ["r2_predictable", "r2_low", "r2_high", "share_of_best", "train_seconds"]
    summary = table.groupby(["recipe", "clips", "method"], sort=False)[numeric].mean().reset_index()
    for _, row in summary.iterrows():
        cells = [row["recipe"], f"{row['clips']:,}", row["method"], *[f"{row[f'r2_{t}']:+.3f}" for t in TRAITS],
                 f"{row['r2_predictable']:+.3f}" + interval_text(row["r2_low"], row["r2_high"]),
                 percent(row["share_of_best"]),
                 "" if pd.isna(row["train_seconds"]) else f"{row['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    methods = [m for m in (METHODS[0], PREVIOUS) + METHODS[1:] if m in set(table["method"])]
    shown = table[table["method"].isin(methods)]
    summary = shown.groupby(["recipe", "clips", "method"], sort=False)["share_of_best"].mean().unstack("method")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(summary)), 4))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        ax.bar(np.arange(len(summary)) + (k - (len(methods) - 1) / 2) * width, 100 * summary[method], width,
               label=method)
    ax.set_xticks(np.arange(len(summary)), [f"{r}\n{c:,}" for r, c in summary.index], fontsize=8)
    ax.axhline(100, color="black", linewidth=0.8)
    ax.set(ylabel="% of the best achievable R²", title="Held-out R² over the predictable traits, mean over seeds")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_figure(fig, [path], dpi=110)


def prepare_flags(recipe: str) -> str:
    """The data/synthetic/prepare.py flags that write the corpus of a recipe without zoo kinds."""
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in RECIPES[recipe].items())


def recipe_help() -> str:
    """The recipes as --help lists them, with which are held out, from RECIPES and HELD_OUT."""
    lines = ["Recipes (prepare.py flags for the first ones; the zoo recipes plant one kind of data/synthetic/zoo.py "
             "per trait, --kinds):", ""]
    for name, recipe in RECIPES.items():
        if "kinds" not in recipe:
            text = RECIPE_NOTES[name] + (f"  [{prepare_flags(name)}]" if recipe else "")
        else:
            text = ("held out: " if name in HELD_OUT else "") + ", ".join(recipe["kinds"])
            if recipe.get("snr") == "fi":
                text += " (First-Impressions-like noise)"
        lines.append(f"  {name:<10} {text}")
    lines += ["", f"{', '.join(HELD_OUT)} are held out: no design choice was made on their kinds; design choices "
              "were made on the others. The per-kind table (in comparison.md) gives each zoo kind's R² per "
              "method, the held-out kinds first: the honest estimate for a signal nobody planted. Over two seeds "
              "(two independent test corpora) it gives their mean, its interval from theirs by a normal "
              "approximation."]
    return "\n".join(textwrap.fill(line, 118, subsequent_indent=" " * 13 if line.startswith("  ") else "",
                                   break_on_hyphens=False)
                     if line else "" for line in lines)


def build_parser() -> Parser:
    parser = Parser(f"{__doc__}\n{recipe_help()}")
    parser.add_argument("-o", "--output", type=Path, default=Path("comparison"), help="folder for the results")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES), metavar="RECIPE",
                        help="corpus recipes (listed above; default: all)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[300, 1000, 3000], help="corpus sizes in clips")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="corpus and training seeds")
    parser.add_argument("--fi-size", type=int, default=1200, help="the size of the corpora of the recipes at "
                        "First-Impressions-like noise (one size)")
    parser.add_argument("--test-clips", type=int, default=1000, help="clips of each independent test corpus")
    parser.add_argument("--epochs", type=int, default=None, help="cap the network's epochs (default: the default)")
    parser.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the intervals")
    parser.add_argument("--quick", action="store_true", help="one 300-clip corpus per recipe and seed 0")
    parser.add_argument("--previous", action="store_true",
                        help="also train the previous demo network (the paper's architecture with the demo's sizes)")
    parser.add_argument("--tables", nargs="+", type=Path, metavar="CSV",
                        help="train nothing: merge these saved comparison.csv files into one table and figure")
    return parser


SAVED_COLUMNS = ("recipe", "clips", "seed", "method", "train_seconds", *[f"r2_{t}" for t in TRAITS], "r2_predictable",
                 "r2_low", "r2_high", "share_of_best")


def saved_rows(paths: Sequence[Path]) -> pd.DataFrame:
    """The rows of saved comparison.csv files, refusing a corpus (recipe, clips, seed) that two of them hold."""
    tables = []
    for path in paths:
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError) as err:
            raise DataError(path, f"cannot read a comparison table ({first_line(err)})") from None
        missing = set(SAVED_COLUMNS) - set(table.columns)
        if missing:
            raise DataError(path, f"not a comparison table (no column {', '.join(sorted(missing))})")
        for column in table.columns.difference(["recipe", "method", "note"]):
            values = pd.to_numeric(table[column], errors="coerce")
            bad = values.isna() & table[column].notna()
            if bad.any():
                raise DataError(path, f"row {int(bad.idxmax()) + 2}, column {column}: "
                                      f"{table[column][bad].iloc[0]!r} is not a number")
        tables.append(table.assign(_file=str(path)))
    rows = pd.concat(tables, ignore_index=True)
    runs = rows.drop_duplicates(["recipe", "clips", "seed", "_file"])
    twice = runs[runs.duplicated(["recipe", "clips", "seed"])]
    if len(twice):
        recipe, clips, seed = twice.iloc[0][["recipe", "clips", "seed"]]
        raise DataError(None, f"{recipe}, {clips} clips, seed {seed} is in more than one of the tables; "
                              "keep one")
    order = rows["recipe"].map({name: k for k, name in enumerate(RECIPES)}).fillna(len(RECIPES))
    return rows.assign(_order=order).sort_values(["_order", "clips", "seed"], kind="stable").drop(
        columns=["_file", "_order"]).reset_index(drop=True)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.sizes, args.seeds, args.fi_size = [300], [0], 300
    check_writable_folder(args.output)
    if args.tables:
        check_outputs([args.output / name for name in ("comparison.csv", "comparison.md", "comparison.png")],
                      inputs=args.tables)
        table = saved_rows(args.tables)
        write_table(table, args.output / "comparison.csv")
        return write_summary(table, args.output)
    use_all_cores()
    rows = []
    for recipe in args.recipes:
        for n_clips in ([args.fi_size] if RECIPES[recipe].get("snr") == "fi" else args.sizes):
            for seed in args.seeds:
                print(f"{recipe}, {n_clips} clips, seed {seed} ...", flush=True)
                rows += evaluate_corpus(recipe, n_clips, seed, args.test_clips, args.epochs, args.bootstrap,
                                        args.previous)
                done = pd.DataFrame(rows)
                write_table(done, args.output / "comparison.csv")
    return write_summary(pd.DataFrame(rows), args.output)


def write_summary(table: pd.DataFrame, folder: Path) -> int:
    text = markdown(table)
    write_text_atomic(folder / "comparison.md", text + "\n")
    plot(table, folder / "comparison.png")
    print(text)
    print(f"wrote {folder}/comparison.csv, comparison.md and comparison.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
