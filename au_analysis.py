"""Which facial cues go with which trait: the paper's Figure 6 (per-clip feature statistics vs traits), with
FDR-controlled significance, and, given a model, permutation importance of feature groups and features.

    python au_analysis.py labelled_frames.csv -o figures/
    python au_analysis.py data/synthetic/frames.csv --method both --weights weights/hybrid.pt \\
        --data data/synthetic/frames.csv -o figures/

LABELLED is a frame table with features and the five trait columns (attn_deploy.py --frames-output, the paper's
output_pers.csv, or a training table), grouped into clips by ID, else clip_id (--group-by File: by file, as the
paper's script does). For each clip the mean and std of every feature present is correlated with each trait. Stars
* / ** / *** mark q < .05 / .01 / .001, where q is the Benjamini-Hochberg adjusted p-value over all tests in the
figure (--raw-p: the paper's uncorrected p).

p-values: from Student's t with n - 2 degrees of freedom at 30 clips or more (as scipy's pearsonr and spearmanr);
below 30 clips, where that approximation does not hold, from permutations of the clips' traits: every one of
the n! orders up to 7 clips (exact), else 9,999 seeded shuffles (--seed). Fewer than 5 clips are refused: the
smallest two-sided p any correlation can have over n clips is 2/n!, 0.083 at 4 clips, so nothing could be
significant. n is printed beside every table and figure.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.special import stdtr

from cli import (Parser, add_device_option, add_labels_option, add_options, check_outputs, check_writable_folder,
                 options_from, report_user_errors)
from errors import DataError
from metrics import metric_arrays
from openface import (FEATURE_COLUMNS, FEATURE_GROUPS, TRAIT_FIGURE_LABELS, TRAITS, Clip, ReadOptions, ReadSummary,
                      Status, checked_header, display_name, features_present, input_files, iter_frame_table,
                      trait_columns_in)
from plots import pyplot, save_figure
from tables import manifest_beside, write_table

FIGURE_TRAIT_ORDER: tuple[str, ...] = ("openness", "conscientiousness", "extroversion", "agreeableness", "neuroticism")
STATS: tuple[str, ...] = ("mean", "std")
MIN_CLIPS = 5  # below, no two-sided p can be under .05 (the smallest over all n! orders is 2/n!)
PERMUTATION_BELOW = 30  # clips: fewer, and p-values come from permutations instead of the t approximation
EXACT_ORDERS = 5040  # every order of the clips when there are at most this many (7! = 5,040)
SHUFFLES = 9999


# ----------------------------------------------------------------------------------------------------------
# Per-clip statistics


def labelled_clips(path: Path, group_by: str | None, reading: ReadOptions) -> tuple[list[Clip], list[str], list[str]]:
    """The labelled, usable clips of a frame table (read and checked like every other input), the features
    present, and notes on what was left out."""
    header = checked_header(path)
    missing = [t for t in TRAITS if t not in trait_columns_in(header)]
    if missing:
        raise DataError(path, f"missing trait columns {', '.join(missing)} (label the clips with attn_deploy.py "
                              "--frames-output first)")
    features = features_present(header)
    if not features:
        raise DataError(path, f"none of the {len(FEATURE_COLUMNS)} feature columns is present")
    summary = ReadSummary(files=1)
    clips = []
    for clip in iter_frame_table(path, features, reading, id_column=group_by):
        summary.add(clip)
        if clip.status is Status.OK:
            clips.append(clip)
    labelled = [c for c in clips if c.label is not None]
    notes = summary.render().splitlines()[1:]
    if len(labelled) < len(clips):
        notes.append(f"left out {len(clips) - len(labelled)} usable clip(s) without trait values")
    if len(labelled) < MIN_CLIPS:
        raise DataError(path, f"only {len(labelled)} labelled usable clip(s); with fewer than {MIN_CLIPS} no "
                              "correlation can be significant (the smallest two-sided p over n clips is 2/n!)")
    return labelled, features, notes


def clip_statistics_table(clips: Sequence[Clip], features: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-clip mean and std (n - 1) of every feature, columns (stat, feature); and the traits of each clip."""
    means = np.stack([c.frames.mean(axis=0, dtype=np.float64) for c in clips])  # (N, F)
    with np.errstate(invalid="ignore", divide="ignore"):
        stds = np.stack([c.frames.std(axis=0, ddof=1, dtype=np.float64) for c in clips])  # NaN for one frame
    index = pd.Index([c.clip_id for c in clips], name="clip")
    columns = pd.MultiIndex.from_product([STATS, features])
    table = pd.DataFrame(np.concatenate([means, stds], axis=1), index=index, columns=columns)
    traits = pd.DataFrame(np.stack([c.label for c in clips]).astype(np.float64), index=index, columns=list(TRAITS))
    return table, traits


def constant_over_clips(table: pd.DataFrame, traits: pd.DataFrame) -> list[str]:
    """The clip statistics ('AU09_r mean') and traits ('openness (trait)') that take one value over all clips:
    every correlation with one of them is undefined."""
    statistics = [f"{feature} {stat}" for stat, feature in table.columns if table[(stat, feature)].nunique() <= 1]
    return statistics + [f"{trait} (trait)" for trait in traits.columns if traits[trait].nunique() <= 1]


# ----------------------------------------------------------------------------------------------------------
# Correlations


def rank_columns(values: np.ndarray) -> np.ndarray:
    """Average ranks of each column (ties share their mean rank), as Spearman's rho needs."""
    return pd.DataFrame(values).rank(axis=0, method="average").to_numpy()


def correlation_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r between every column of x (N, P) and of y (N, K) -> (P, K); NaN for constant columns."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    xn, yn = np.sqrt((xc**2).sum(axis=0)), np.sqrt((yc**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (xc.T @ yc) / np.outer(xn, yn)
    r[(xn == 0)[:, None] | (yn == 0)[None, :]] = np.nan
    return np.clip(r, -1, 1)


def correlation_pvalues(r: np.ndarray, n: int) -> np.ndarray:
    """Two-sided p-values of r under no correlation (t with n - 2 df, as scipy's pearsonr and spearmanr)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt((n - 2) / (1 - r**2))
    p = 2 * stdtr(n - 2, -np.abs(t))  # two-sided tail of Student's t
    return np.where(np.abs(r) >= 1, 0.0, p)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH adjusted p-values (q) over all finite entries of p, same shape; NaN stays NaN."""
    flat = p.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    q = np.full_like(flat, np.nan, dtype=np.float64)
    order = finite[np.argsort(flat[finite])]
    m = len(order)
    adjusted = flat[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1, np.minimum.accumulate(adjusted[::-1])[::-1])
    return q.reshape(p.shape)


def unit_columns(values: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit length (N, P), so x.T @ y is Pearson's r; constant columns are zero."""
    centred = values - values.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, centred / norm, 0.0)


def permutation_pvalues(x: np.ndarray, y: np.ndarray, r: np.ndarray,
                        rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Two-sided p of every r (P, K) between columns of x (N, P) and y (N, K), from reorderings of y's rows:
    all N! of them (exact) when there are at most EXACT_ORDERS, else SHUFFLES random ones, whose tail counts k
    give (1 + k)/(1 + B) so that p is never 0."""
    n = len(x)
    xs, ys = unit_columns(x), unit_columns(y)
    exact = math.factorial(n) <= EXACT_ORDERS
    orders = np.array(list(itertools.permutations(range(n)))) if exact else \
        np.stack([rng.permutation(n) for _ in range(SHUFFLES)])
    below, above = np.zeros(r.shape), np.zeros(r.shape)
    for start in range(0, len(orders), 1024):
        shuffled = np.einsum("np,bnk->bpk", xs, ys[orders[start:start + 1024]])  # (B, P, K)
        below += (shuffled <= r + 1e-9).sum(axis=0)
        above += (shuffled >= r - 1e-9).sum(axis=0)
    tails = np.minimum(below, above)
    one_sided = tails / len(orders) if exact else (1 + tails) / (1 + len(orders))
    p = np.minimum(1.0, 2 * one_sided)  # twice the smaller tail, as scipy.stats.permutation_test
    p[~np.isfinite(r)] = np.nan
    return p, f"exact permutation ({len(orders):,} orders)" if exact else f"permutation ({len(orders):,} shuffles)"


def correlate(stats_table: pd.DataFrame, traits: pd.DataFrame, method: str, seed: int = 0) -> pd.DataFrame:
    """Long table (stat, feature, trait, r, p, q, n, p_method) for one method; q is BH over each stat's family."""
    rows = []
    y = traits[list(TRAITS)].to_numpy(np.float64)
    for k, stat in enumerate(STATS):
        block = stats_table[stat]
        x = block.to_numpy(np.float64)
        if method == "spearman":
            x, y_used = rank_columns(x), rank_columns(y)
        else:
            y_used = y
        r = correlation_matrix(x, y_used)
        if len(x) < PERMUTATION_BELOW:
            p, how = permutation_pvalues(x, y_used, r, np.random.default_rng([seed, k]))
        else:
            p, how = correlation_pvalues(r, len(x)), "t approximation"
        q = benjamini_hochberg(p)
        for i, feature in enumerate(block.columns):
            for j, trait in enumerate(TRAITS):
                rows.append({"stat": stat, "feature": feature, "trait": trait, "r": r[i, j], "p": p[i, j],
                             "q": q[i, j], "n": len(x), "p_method": how})
    return pd.DataFrame(rows)


def traits_described(labelled: Path) -> str:
    """What the traits of a frame table are: a model's predictions when attn_deploy.py wrote it (its manifest
    lies beside it), else labels."""
    manifest = manifest_beside(labelled)
    try:
        weights = json.loads(manifest.read_text()).get("weights") if manifest.is_file() else None
    except (OSError, ValueError, AttributeError):
        weights = None
    return f"trait predicted by {weights}" if weights else "trait label"


def stars(value: float) -> str:
    if not np.isfinite(value):
        return ""
    return "***" if value < 0.001 else "**" if value < 0.01 else "*" if value < 0.05 else ""


def plot_heatmap(results: pd.DataFrame, stat: str, method: str, use_raw_p: bool, out: Path,
                 formats: Sequence[str], traits_are: str = "trait") -> list[Path]:
    plt = pyplot()
    part = results[results["stat"] == stat]
    r = part.pivot(index="feature", columns="trait", values="r")
    sig = part.pivot(index="feature", columns="trait", values="p" if use_raw_p else "q")
    features = [f for f in FEATURE_COLUMNS if f in r.index]
    r, sig = r.loc[features, list(FIGURE_TRAIT_ORDER)], sig.loc[features, list(FIGURE_TRAIT_ORDER)]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(features) + 1.8))
    image = ax.imshow(r.to_numpy(dtype=float), cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    for i in range(len(features)):
        for j in range(len(FIGURE_TRAIT_ORDER)):
            value = r.iat[i, j]
            text = "n/a" if not np.isfinite(value) else f"{value:.2f}{stars(sig.iat[i, j])}"
            dark = np.isfinite(value) and abs(value) > 0.6  # saturated cells: white text stays readable
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(FIGURE_TRAIT_ORDER)), [TRAIT_FIGURE_LABELS[t] for t in FIGURE_TRAIT_ORDER])
    ax.set_yticks(range(len(features)), [display_name(f) for f in features])
    basis = "raw p" if use_raw_p else "BH q"
    ax.set_title(f"{method.capitalize()} r: per-clip {stat} vs {traits_are} (n = {int(part['n'].iloc[0])} clips)\n"
                 f"* / ** / *** : {basis} < .05 / .01 / .001; p by {part['p_method'].iloc[0]}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return save_figure(fig, [out / f"{method}_{stat}.{ext}" for ext in formats], dpi=130)


# ----------------------------------------------------------------------------------------------------------
# Permutation importance


def permuted_clips(clips: Sequence[Clip], columns: Sequence[int], rng: np.random.Generator) -> list[Clip]:
    """Copies of the clips whose `columns` tracks come from other clips (cropped or repeated to length)."""
    order = rng.permutation(len(clips))
    out = []
    for clip, donor in zip(clips, order):
        frames = clip.frames.copy()
        source = clips[donor].frames[:, columns]
        frames[:, columns] = np.resize(source, (clip.n_frames, len(columns))) if len(source) else 0
        out.append(Clip(clip.clip_id, clip.file, clip.group, frames, clip.label))
    return out


def permutation_importance(model, clips: Sequence[Clip], scaler, features: Sequence[str], repeats: int,
                           seed: int, device) -> pd.DataFrame:
    """Drop in held-out R² per trait when a feature group or a feature is shuffled across clips.

    Returns a long table (unit, kind, trait, base_r2, drop_mean, drop_std) with kind 'group' or 'feature'; base_r2
    is the held-out R² with nothing shuffled."""
    from dataset import predict

    truth = np.stack([c.label for c in clips])
    base = metric_arrays(truth, predict(model, clips, scaler, device=device))["r2"]
    units = [(name, "group", [features.index(c) for c in cols if c in features])
             for name, cols in FEATURE_GROUPS.items()]
    units = [u for u in units if u[2]] + [(f, "feature", [j]) for j, f in enumerate(features)]
    rows = []
    for name, kind, columns in units:
        rng = np.random.default_rng([seed, len(rows)])
        drops = np.stack([base - metric_arrays(truth, predict(model, permuted_clips(clips, columns, rng), scaler,
                                                               device=device))["r2"] for _ in range(repeats)])
        for j, trait in enumerate(TRAITS):
            rows.append({"unit": name, "kind": kind, "trait": trait, "base_r2": base[j], "drop_mean": drops[:, j].mean(),
                         "drop_std": drops[:, j].std(ddof=1) if repeats > 1 else 0.0})
    return pd.DataFrame(rows)


def plot_importance(table: pd.DataFrame, out: Path, formats: Sequence[str]) -> list[Path]:
    plt = pyplot()
    groups = table[table["kind"] == "group"]
    feats = table[table["kind"] == "feature"]
    names = list(dict.fromkeys(feats["unit"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 0.35 * len(names) + 2.5),
                                   gridspec_kw={"width_ratios": [1, 1.4]})
    group_names = list(dict.fromkeys(groups["unit"]))
    width = 0.8 / len(TRAITS)
    for j, trait in enumerate(FIGURE_TRAIT_ORDER):
        part = groups[groups["trait"] == trait].set_index("unit").loc[group_names]
        ax1.bar(np.arange(len(group_names)) + (j - 2) * width, part["drop_mean"], width, yerr=part["drop_std"],
                capsize=2, label=TRAIT_FIGURE_LABELS[trait])
    ax1.set_xticks(range(len(group_names)), group_names)
    ax1.axhline(0, color="black", linewidth=0.8)
    ax1.set(ylabel="drop in held-out R² (mean ± sd over repeats)", title="feature groups shuffled")
    ax1.legend(fontsize=8)
    grid = feats.pivot(index="unit", columns="trait", values="drop_mean").loc[names, list(FIGURE_TRAIT_ORDER)]
    limit = max(1e-6, float(np.nanmax(np.abs(grid.to_numpy()))))
    image = ax2.imshow(grid.to_numpy(), cmap="coolwarm", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(names)):
        for j in range(len(FIGURE_TRAIT_ORDER)):
            ax2.text(j, i, f"{grid.iat[i, j]:.3f}", ha="center", va="center", fontsize=7)
    ax2.set_xticks(range(len(FIGURE_TRAIT_ORDER)), [TRAIT_FIGURE_LABELS[t] for t in FIGURE_TRAIT_ORDER])
    ax2.set_yticks(range(len(names)), [display_name(n) for n in names])
    ax2.set_title("single features shuffled: drop in R²")
    fig.colorbar(image, ax=ax2, fraction=0.04)
    fig.tight_layout()
    return save_figure(fig, [out / f"permutation_importance.{ext}" for ext in formats], dpi=120)


# ----------------------------------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(__doc__)
    parser.add_argument("labelled", type=Path, help="frame table (CSV or Parquet) with features and the five traits")
    parser.add_argument("-o", "--output", type=Path, default=Path("figures"), help="folder for figures and tables")
    parser.add_argument("--method", choices=("spearman", "pearson", "both"), default="spearman",
                        help="correlation coefficient")
    parser.add_argument("--raw-p", action="store_true", help="stars from uncorrected p-values, as the paper did")
    parser.add_argument("--figure-formats", nargs="+", choices=("png", "pdf", "svg"), default=["png"],
                        help="figure files to write (pdf/svg for print)")
    parser.add_argument("--group-by", default=None, help="clip column (default: ID, else clip_id)")
    model = parser.add_argument_group("permutation importance (optional)")
    model.add_argument("--weights", type=Path, default=None, help="a trained checkpoint")
    model.add_argument("--data", nargs="+", default=None, help="labelled data the checkpoint can read")
    model.add_argument("--split", type=Path, default=None, help="split file (default: the checkpoint's)")
    model.add_argument("--repeats", type=int, default=5, help="shuffles per feature")
    model.add_argument("--seed", type=int, default=0, help="seeds the shuffles (of permutation importance, and of "
                                                          "the p-values below 30 clips)")
    add_labels_option(model)
    add_device_option(model)
    add_options(parser.add_argument_group("input"), ReadOptions)
    return parser


def written_files(out: Path, methods: Sequence[str], importance: bool, formats: Sequence[str]) -> list[Path]:
    names = [f"correlations_{m}.csv" for m in methods]
    names += [f"{m}_{stat}.{ext}" for m in methods for stat in STATS for ext in formats]
    names += ["permutation_importance.csv"] + [f"permutation_importance.{ext}" for ext in formats] if importance \
        else []
    return [out / name for name in names]


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.weights is None) != (args.data is None):
        raise DataError(None, "--weights and --data go together")
    if not args.labelled.is_file():
        raise DataError(args.labelled, "no such file")
    if args.repeats < 1:
        raise DataError(None, "--repeats must be at least 1")
    methods = ("spearman", "pearson") if args.method == "both" else (args.method,)
    read_paths = [args.labelled] + ([f.path for f in input_files(args.data)] + [args.weights] if args.data else [])
    read_paths += [Path(p) for p in args.labels or []] + ([args.split] if args.split else [])
    check_writable_folder(args.output)
    check_outputs(written_files(args.output, methods, args.weights is not None, args.figure_formats), read_paths)
    reading = options_from(args, ReadOptions)
    clips, features, notes = labelled_clips(args.labelled, args.group_by, reading)
    stats_table, traits = clip_statistics_table(clips, features)
    print(f"{len(traits)} labelled clips, {len(features)} features from {args.labelled}")
    for note in notes:
        print(f"  {note}")
    written = []
    if len(traits) < PERMUTATION_BELOW:
        print(f"  n = {len(traits)} clips, fewer than {PERMUTATION_BELOW}: p-values from permutations of the clips "
              "(the t approximation needs more); few tests can pass the FDR control at this size")
    constant = constant_over_clips(stats_table, traits)
    if constant:
        print(f"  r is undefined (constant over clips) for {', '.join(constant)}")
    for method in methods:
        results = correlate(stats_table, traits, method, args.seed)
        path = args.output / f"correlations_{method}.csv"
        write_table(results, path)
        written.append(path)
        for stat in STATS:
            written += plot_heatmap(results, stat, method, args.raw_p, args.output, args.figure_formats,
                                    traits_described(args.labelled))
        basis = "p" if args.raw_p else "q"
        top = results[results[basis] < 0.05].reindex(columns=["stat", "feature", "trait", "r", basis])
        top = top.reindex(top["r"].abs().sort_values(ascending=False).index).head(10)
        print(f"{method} (n = {len(traits)} clips, p by {results['p_method'].iloc[0]}): "
              f"{int((results[basis] < 0.05).sum())} of {len(results)} feature-trait pairs with {basis} < .05; "
              "strongest:\n" + (top.to_string(index=False, float_format=lambda v: f"{v:.3g}")
                                                if len(top) else "  none"))
    if args.weights is not None:
        written += importance_outputs(args, reading)
    print(f"wrote {len(written)} files to {args.output}")
    return 0


def importance_outputs(args, reading: ReadOptions) -> list[Path]:
    """Permutation importance of the checkpoint on its held-out clips, with the input transform it is deployed
    with (checkpoint.input_scaler)."""
    from checkpoint import input_scaler, load_checkpoint
    from dataset import held_out_clips, load_labelled_clips
    from distributed import resolve_device, use_all_cores

    use_all_cores()
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.weights, device)
    clips, _ = load_labelled_clips(args.data, args.labels, ckpt.features, reading)
    held = held_out_clips(clips, ckpt.split, args.split, False, args.data[0])
    scaler = input_scaler(ckpt, held.test)
    table = permutation_importance(ckpt.model, held.test, scaler, list(ckpt.features), args.repeats, args.seed, device)
    path = args.output / "permutation_importance.csv"
    write_table(table, path)
    groups = table[table["kind"] == "group"].pivot(index="unit", columns="trait", values="drop_mean")
    print(f"permutation importance on {len(held.test)} held-out clips (drop in R², mean of {args.repeats}):\n"
          + groups[list(TRAITS)].to_string(float_format=lambda v: f"{v:+.3f}"))
    return [path] + plot_importance(table, args.output, args.figure_formats)


if __name__ == "__main__":
    sys.exit(main())
