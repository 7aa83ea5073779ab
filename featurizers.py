"""The linear paths of the default network, one object each in LINEAR_PATHS: what each computes from a clip (its
featurizer), how many inputs that gives, how ridge regression fits it, and the names of its layer and buffers.

The network (model.HybridNet), their fit and gates (stacking.py), the checkpoint check (checkpoint.py) and the
reports iterate over this registry; a new path is one entry here and its on/off field in model.ModelConfig.
A path's inputs are its featurizer's values, with a clip's missing ones filled in (`fill`) and, for a knotted path,
hinged at knots (`knots`); a featurizer may also read levels (`levels`). The fit (stacking.fit_linear_paths) sets
all three from the training clips. A gated path's layer also reads the statistics path's inputs (each input's clip
mean and std) where the network fits each path together with them (ModelConfig.paths_with_statistics)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F

from cli import flag_of
from layers import VARIANCE_FLOOR, masked_moments, valid_mask

if TYPE_CHECKING:
    from model import ModelConfig

Z_STD_FLOOR = 1e-3  # added to a clip's std before z-scoring its frames: an input that barely moves stays near 0
EVENT_Z = 2.5  # event path: a peak of an input beyond this many standard deviations of its clip is an event
EVENT_CAP = 180  # frames (6 s at 30 fps): the longest time from one event to another that the event path counts


def clip_moments(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, 2F): each clip's mean and std of every input over its valid frames."""
    mean, std = masked_moments(x.transpose(1, 2), valid_mask(lengths, x.shape[1]))
    return torch.cat([mean, std], dim=1)


def z_scored(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, F) frames standardised by each clip's own mean and std over its valid frames (mask (B, T)), zero
    beyond each clip."""
    mean, std = masked_moments(x.transpose(1, 2), mask)  # (B, F) each
    return (x - mean[:, None, :]) / (std[:, None, :] + Z_STD_FLOOR) * mask[:, :, None]


def lagged_correlations(z: torch.Tensor, lengths: torch.Tensor, lags: Sequence[int]) -> torch.Tensor:
    """(B, T, F) z_scored frames -> (B, len(lags) * F * F): for each lag tau, the correlation over each clip's
    valid frames of input i at t with input j at t + tau. Its asymmetry (i then j, or j then i) says which movement
    follows which, whatever their sizes, which clip means and spreads cannot say."""
    parts = []
    for lag in lags:
        if lag >= z.shape[1]:
            parts.append(z.new_zeros(z.shape[0], z.shape[2] ** 2))
            continue
        pairs = (lengths - lag).clamp(min=1).to(z.dtype)  # (B,) frame pairs (t, t + lag) inside the clip
        products = torch.bmm(z[:, :z.shape[1] - lag].transpose(1, 2), z[:, lag:])  # (B, F, F)
        parts.append(products.flatten(1) / pairs[:, None])
    return torch.cat(parts, dim=1)


def co_moments(z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) z_scored frames -> (B, C(F + 2, 3)): for every three inputs i <= j <= k (in that order), the mean
    over each clip's valid frames of the product of their z-scores. Where i = j it is how input k moves with the
    size of input i's excursions either way; where all three differ, whether two move together more where the
    third is high (or low)."""
    parts = []
    for i in range(z.shape[2]):
        rest = z[:, :, i:]  # (B, T, F - i)
        products = torch.bmm((z[:, :, i:i + 1] * rest).transpose(1, 2), rest)  # (B, F - i, F - i): [j - i, k - i]
        j, k = torch.triu_indices(rest.shape[2], rest.shape[2], device=z.device)
        parts.append(products[:, j, k])
    return torch.cat(parts, dim=1) / lengths.clamp(min=1).to(z.dtype)[:, None]


def event_timings(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, 2 * 2F * F): for each input i's rises and dips and each input j's rises, first the mean
    time in frames from the last i-event to each j-rise that comes at most EVENT_CAP frames after one, then the
    share of j-rises that do, over each clip's valid frames; NaN where no j-rise does, or j never rises (the
    network fills those in). An event is a peak beyond EVENT_Z standard deviations of the clip. How long after a
    nod a surprised look comes is one such latency, how many smiles follow a nod one such share; lagged
    correlations spread both thinly over many lags."""
    steps, n = x.shape[1], x.shape[2]
    mask = valid_mask(lengths, steps)  # (B, T)
    z = z_scored(x, mask)  # (B, T, F)
    z = torch.cat([z, -z], dim=2).masked_fill(~mask[:, :, None], -math.inf)  # (B, T, 2F): rises, then dips
    before = F.pad(z, (0, 0, 1, 0), value=-math.inf)[:, :-1]
    after = F.pad(z, (0, 0, 0, 1), value=-math.inf)[:, 1:]
    peaks = (z > EVENT_Z) & (z >= before) & (z > after)  # (B, T, 2F)
    t = torch.arange(steps, device=x.device, dtype=x.dtype)[None, :, None]  # (1, T, 1)
    last = torch.where(peaks, t, t.new_tensor(-math.inf)).cummax(dim=1).values  # (B, T, 2F)
    since = t - last  # (B, T, 2F) frames since the last event of each channel (inf before the first)
    answered = since <= EVENT_CAP  # (B, T, 2F)
    rises = peaks[:, :, :n].to(x.dtype)  # (B, T, F)
    count = torch.bmm(answered.to(x.dtype).transpose(1, 2), rises)  # (B, 2F, F) j-rises after an i-event
    total = torch.bmm(since.masked_fill(~answered, 0.0).transpose(1, 2), rises)  # (B, 2F, F)
    all_rises = rises.sum(dim=1)[:, None, :]  # (B, 1, F)
    latency = torch.where(count > 0, total / count.clamp(min=1), math.nan)  # (B, 2F, F)
    share = torch.where(all_rises > 0, count / all_rises.clamp(min=1), math.nan)  # (B, 2F, F)
    return torch.cat([latency.flatten(1), share.flatten(1)], dim=1)


SHAPE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SHAPE_LAGS = (1, 2, 4, 8, 16, 32)  # frames: each input's own autocorrelation at these lags
SHAPE_SEGMENTS = 4  # equal parts of a clip whose mean of the input's own z-scores show a drift
SHAPE_SPIKE_Z = 2.0  # an excursion beyond this many of the clip's own standard deviations is a spike
SHAPE_STATISTICS = 2 + len(SHAPE_QUANTILES) + 2 + len(SHAPE_LAGS) + 4 + SHAPE_SEGMENTS  # per input


def masked_rms(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, F) values, (B, T) mask -> (B, F): the root mean square over the masked frames."""
    m = mask[:, :, None].to(v.dtype)
    return torch.sqrt((v ** 2 * m).sum(dim=1) / m.sum(dim=1).clamp(min=1) + VARIANCE_FLOOR)


def nearest_ranks(counts: torch.Tensor, qs: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    """(...) counts of values -> (..., len(qs)) the 0-based rank of each quantile among them (nearest rank, q times
    the last rank rounded in `dtype`, the values' own, so a rank on a tie rounds as it always has)."""
    last = (counts - 1).clamp(min=0).to(dtype)
    return torch.stack([(q * last).round().long() for q in qs], dim=-1)


def masked_quantiles(x: torch.Tensor, lengths: torch.Tensor, qs: Sequence[float]) -> torch.Tensor:
    """(B, T, F) -> (B, len(qs), F): each input's quantiles over each clip's valid frames (nearest rank)."""
    mask = valid_mask(lengths, x.shape[1])
    ordered = x.masked_fill(~mask[:, :, None], math.inf).sort(dim=1).values  # (B, T, F), valid frames first
    ranks = nearest_ranks(lengths, qs, x.dtype)  # (B, Q)
    return ordered.gather(1, ranks[:, :, None].expand(-1, -1, x.shape[2]))


def segment_means_of(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, SHAPE_SEGMENTS, F): each input's mean in SHAPE_SEGMENTS equal parts of each clip's valid
    frames."""
    mask = valid_mask(lengths, x.shape[1])  # (B, T)
    t = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[None, :]  # (1, T)
    segment = (t * SHAPE_SEGMENTS / lengths.to(x.dtype)[:, None]).long().clamp(max=SHAPE_SEGMENTS - 1)  # (B, T)
    one_hot = F.one_hot(segment, SHAPE_SEGMENTS).to(x.dtype) * mask[:, :, None]  # (B, T, S)
    return torch.bmm(one_hot.transpose(1, 2), x) / one_hot.sum(dim=1)[:, :, None].clamp(min=1)


def clip_shapes(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, SHAPE_STATISTICS * F): per input, over each clip's valid frames, what its mean and std
    leave out: the squares of both (a level or spread that matters nonlinearly), quantiles, how rough it is (the
    spread of its first and second differences, against its own spread), its autocorrelation at SHAPE_LAGS, how
    often it crosses its own mean, how long it stays above it, how often it spikes, its drift (the correlation with
    time), and its mean in SHAPE_SEGMENTS equal parts of the clip. Everything except the squares and quantiles is
    read from the input's own z-scores, so it is blind to level and spread."""
    steps = x.shape[1]
    mask = valid_mask(lengths, steps)  # (B, T)
    mean, std = masked_moments(x.transpose(1, 2), mask)  # (B, F)
    z = z_scored(x, mask)  # (B, T, F)
    pairs = mask[:, 1:] & mask[:, :-1]  # (B, T-1) frame pairs inside the clip
    d1 = z[:, 1:] - z[:, :-1]
    d2 = d1[:, 1:] - d1[:, :-1]
    rough = [masked_rms(d1, pairs), masked_rms(d2, pairs[:, 1:] & pairs[:, :-1])]
    count = lengths.to(x.dtype)[:, None]  # (B, 1)
    auto = [(z[:, :-lag] * z[:, lag:]).sum(dim=1) / (count - lag).clamp(min=1) if lag < steps
            else x.new_zeros(x.shape[0], x.shape[2]) for lag in SHAPE_LAGS]
    above = (z > 0) & mask[:, :, None]  # (B, T, F)
    crossings = ((above[:, 1:] != above[:, :-1]) & pairs[:, :, None]).sum(dim=1).to(x.dtype)
    rises = (~above[:, :-1] & above[:, 1:]).sum(dim=1).to(x.dtype) + above[:, 0].to(x.dtype)  # runs above the mean
    spiking = (z > SHAPE_SPIKE_Z) & mask[:, :, None]
    spikes = (~spiking[:, :-1] & spiking[:, 1:]).sum(dim=1).to(x.dtype) + spiking[:, 0].to(x.dtype)
    t = torch.arange(steps, device=x.device, dtype=x.dtype)[None, :]  # (1, T)
    centred = ((t - (count - 1) / 2) / (count / 2)) * mask  # (B, T) from -1 to 1 over each clip
    spread_of_time = torch.sqrt((centred ** 2).sum(dim=1, keepdim=True) * count)  # (B, 1): 0 or at least 1
    drift = (z * centred[:, :, None]).sum(dim=1) / spread_of_time.clamp(min=1)  # a one-frame clip has no drift
    segments = segment_means_of(z, lengths)  # (B, S, F)
    per_input = [mean ** 2, std ** 2, *masked_quantiles(x, lengths, SHAPE_QUANTILES).unbind(1), *rough, *auto,
                 crossings / (count - 1).clamp(min=1), torch.log1p(above.sum(dim=1) / rises.clamp(min=1)),
                 100 * spikes / count, drift, *segments.unbind(1)]
    return torch.stack(per_input, dim=1).flatten(1)  # (B, SHAPE_STATISTICS * F)


EXTREME_QUANTILES = (0.0, 0.01, 0.99, 1.0)  # the least, the most and nearly so of each input over a clip
CURVE_STATISTICS = 2 + SHAPE_STATISTICS + len(EXTREME_QUANTILES) + SHAPE_SEGMENTS  # per input
HINGE_QUANTILES = (0.2, 0.4, 0.6, 0.8)  # where a knotted path's hinges bend: these quantiles over the training clips


def course(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, SHAPE_SEGMENTS, F): each input's course through the clip in its own units (clip_shapes'
    is in its z-scores): its mean in SHAPE_SEGMENTS equal parts of each clip's valid frames, less its clip mean."""
    mean = masked_moments(x.transpose(1, 2), valid_mask(lengths, x.shape[1]))[0]  # (B, F)
    return segment_means_of(x, lengths) - mean[:, None, :]


def clip_summaries(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, CURVE_STATISTICS * F): each input's mean and std, its shape statistics (clip_shapes), its
    extremes (EXTREME_QUANTILES) and its course through the clip (course) over each clip's valid frames."""
    extremes = masked_quantiles(x, lengths, EXTREME_QUANTILES).flatten(1)  # (B, Q * F)
    return torch.cat([clip_moments(x, lengths), clip_shapes(x, lengths), extremes,
                      course(x, lengths).flatten(1)], dim=1)


def hinges(values: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """(B, P) values, (K, P) knots -> (B, (1 + K) * P): the values and, for each knot, max(0, value - knot): a
    ridge fit on them is a piecewise-linear function of each value, bending at its knots."""
    return torch.cat([values, *(torch.relu(values - knot) for knot in knots)], dim=1)


KERNEL_TAPS = 9  # a random kernel's taps (MiniRocket's kernels: weight -1, and 2 at three of the nine)
KERNEL_DILATIONS = (1, 2, 4, 8, 16, 32)  # frames between a random kernel's taps: 9 to 257 frames under one kernel
LEVEL_SAMPLE_FRAMES = 4_096  # responses per dilation from which the fit reads a kernel path's levels


def random_kernels() -> torch.Tensor:
    """(84, KERNEL_TAPS) MiniRocket's kernels: -1 at every tap but three, 2 at those (every choice of three). They
    sum to 0, so a clip's level does not move their responses."""
    weights = -torch.ones(84, KERNEL_TAPS)
    for k, taps in enumerate(itertools.combinations(range(KERNEL_TAPS), 3)):
        weights[k, list(taps)] = 2.0
    return weights


KERNELS = random_kernels()
KERNELS_PER_DILATION = len(KERNELS) // len(KERNEL_DILATIONS)  # each dilation has its own share of the kernels


def kernel_responses(x: torch.Tensor, lengths: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, F) -> the responses of the d-th dilation's kernels (every len(KERNEL_DILATIONS)-th, from the d-th)
    to every input at every frame where a kernel fits inside the clip: (B, F * KERNELS_PER_DILATION, T'),
    input-major, and their (B, T') mask."""
    dilation, span = KERNEL_DILATIONS[d], (KERNEL_TAPS - 1) * KERNEL_DILATIONS[d]
    kernels = KERNELS[d::len(KERNEL_DILATIONS)][:KERNELS_PER_DILATION].to(x)  # (K, 9)
    weight = kernels[:, None, :].repeat(x.shape[2], 1, 1)  # (F * K, 1, 9): each input's own K kernels
    frames = F.pad(x.transpose(1, 2), (0, max(span + 1 - x.shape[1], 0)))  # (B, F, T), at least one kernel wide
    responses = F.conv1d(frames, weight, groups=x.shape[2], dilation=dilation)  # (B, F * K, T')
    return responses, valid_mask((lengths - span).clamp(min=0), responses.shape[2])


def kernel_shares(x: torch.Tensor, lengths: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(B, T, F), levels (W,) -> (B, W), W = len(KERNEL_DILATIONS) * F * KERNELS_PER_DILATION: for each dilation,
    input and random kernel, the share of the clip's frames where the response passes its level (MiniRocket's
    PPV); NaN where the kernel does not fit inside the clip."""
    parts = []
    for d, block in enumerate(levels.to(x.dtype).chunk(len(KERNEL_DILATIONS))):
        responses, mask = kernel_responses(x, lengths, d)
        responses.masked_fill_(~mask[:, None, :], -math.inf)
        passing = (responses > block[None, :, None]).sum(dim=2).to(x.dtype)  # (B, F * K)
        frames = mask.sum(dim=1, keepdim=True).to(x.dtype)  # (B, 1)
        parts.append(torch.where(frames > 0, passing / frames.clamp(min=1), math.nan))
    return torch.cat(parts, dim=1)


def level_quantiles(width: int) -> torch.Tensor:
    """(width,) where in the training responses each kernel feature's level sits: quantiles spread evenly over
    (0, 1) by the golden-ratio sequence, as MiniRocket's biases are."""
    return (torch.arange(1, width + 1, dtype=torch.float64) * (math.sqrt(5) + 1) / 2) % 1


def kernel_levels(x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, T, F) training clips -> (W,) levels for kernel_shares: each feature's level_quantiles over up to
    LEVEL_SAMPLE_FRAMES of the clips' responses per dilation (drawn by `generator`); 0 for a dilation under which
    no clip fits."""
    blocks = []
    for d in range(len(KERNEL_DILATIONS)):
        responses, mask = kernel_responses(x.double(), lengths, d)
        frames = responses.transpose(1, 2)[mask]  # (n, F * K)
        if len(frames) > LEVEL_SAMPLE_FRAMES:
            frames = frames[torch.randperm(len(frames), generator=generator)[:LEVEL_SAMPLE_FRAMES]]
        blocks.append(frames)
    qs = level_quantiles(sum(block.shape[1] for block in blocks)).chunk(len(blocks))
    return torch.cat([block.T.sort(dim=1).values[torch.arange(block.shape[1]), (q * (len(block) - 1)).round().long()]
                      if len(block) else torch.zeros(block.shape[1], dtype=torch.float64)
                      for block, q in zip(blocks, qs)])


INTERVAL_DEPTH = 4  # the interval path's intervals: the whole clip, its halves, quarters and eighths (QUANT's)
INTERVAL_QUANTILES = (0.1, 0.5, 0.9)
INTERVALS = 2 ** INTERVAL_DEPTH - 1  # per series
INTERVAL_STATISTICS = 2 * INTERVALS * len(INTERVAL_QUANTILES)  # per input: of the series and of its first difference


def interval_quantiles_of_series(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, INTERVALS * Q, F): each input's INTERVAL_QUANTILES in each dyadic interval of each clip's
    valid frames (the whole clip, then its halves, ..., in order; nearest rank), NaN in an interval without
    frames. One sort of the values, then per depth a stable sort by interval, puts each interval's values in order
    side by side."""
    steps = x.shape[1]
    mask = valid_mask(lengths, steps)  # (B, T)
    by_value = x.masked_fill(~mask[:, :, None], math.inf).argsort(dim=1)  # (B, T, F)
    t = torch.arange(steps, device=x.device)[None, :]  # (1, T)
    parts = []
    for depth in range(INTERVAL_DEPTH):
        count = 2 ** depth
        interval = torch.where(mask, t * count // lengths.clamp(min=1)[:, None], count)  # (B, T); count: beyond
        sorted_interval = interval[:, :, None].expand_as(by_value).gather(1, by_value)  # (B, T, F)
        order = by_value.gather(1, sorted_interval.argsort(dim=1, stable=True))  # (B, T, F)
        ordered = x.gather(1, order)  # (B, T, F): interval by interval, each in order of value
        sizes = F.one_hot(interval, count + 1)[:, :, :count].sum(dim=1)  # (B, count) frames per interval
        starts = sizes.cumsum(dim=1) - sizes  # (B, count)
        ranks = (starts[:, :, None] + nearest_ranks(sizes, INTERVAL_QUANTILES, x.dtype)).flatten(1)  # (B, count * Q)
        values = ordered.gather(1, ranks.clamp(max=steps - 1)[:, :, None].expand(-1, -1, x.shape[2]))
        empty = (sizes == 0).repeat_interleave(len(INTERVAL_QUANTILES), dim=1)  # (B, count * Q)
        parts.append(values.masked_fill(empty[:, :, None], math.nan))
    return torch.cat(parts, dim=1)


def first_differences(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, F) frames, (B,) lengths -> (B, T-1, F) each input's change from frame to frame and (B,) the number
    of changes inside each clip."""
    return x[:, 1:] - x[:, :-1], (lengths - 1).clamp(min=0)


def interval_quantiles(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, INTERVAL_STATISTICS * F): per input, interval_quantiles_of_series of its frames and of its
    first differences (how fast it moves there), input-major; NaN where an interval is empty. Where in the clip an
    input moves more, or faster, or sits higher is one of these, or a difference of two."""
    diffs, diff_lengths = first_differences(x, lengths)
    series = [interval_quantiles_of_series(x, lengths),
              interval_quantiles_of_series(diffs, diff_lengths) if diffs.shape[1]
              else x.new_full((x.shape[0], INTERVALS * len(INTERVAL_QUANTILES), x.shape[2]), math.nan)]
    return torch.cat(series, dim=1).transpose(1, 2).flatten(1)


@dataclass(frozen=True)
class LinearPath:
    """A linear layer on one featurizer of each clip, fitted by ridge regression before training and then fixed.

    featurize: (B, T, F) frames zero beyond each length, (B,) lengths, config -> (B, width), NaN where a clip
    lacks an input (then `fill`, a buffer of training means, stands in for it)."""

    key: str  # its layer's name in the network
    name: str  # as reports say it
    enabled_by: str  # the ModelConfig field that turns it on
    featurize: Callable[[torch.Tensor, torch.Tensor, "ModelConfig"], torch.Tensor]
    width: Callable[["ModelConfig"], int]
    screened: bool = False  # many inputs, few of which matter: ridge.screened_ridge_fit (the few, or all)
    gates: str | None = None  # its buffer of per-trait weights; None for the statistics path, which every trait uses
    fill: str | None = None  # its buffer of training means that stand in for inputs a clip lacks, if it has any
    knots: str | None = None  # its buffer (len(HINGE_QUANTILES), width) of knots, if its inputs are hinges of its
    # featurizer's values at the training clips' HINGE_QUANTILES
    levels: str | None = None  # its buffer (width,) of levels, if its featurizer reads them (a fourth argument)
    fit_levels: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None  # (B, T, F)
    # training clips, (B,) lengths, a seeded generator -> (width,) the levels the fit sets

    def layer_width(self, cfg: "ModelConfig") -> int:
        """How many inputs its layer has: the featurizer's width, times 1 + len(HINGE_QUANTILES) with knots, and
        for a gated path fitted with the clip statistics (cfg.paths_with_statistics) the statistics path's inputs."""
        own = self.width(cfg) * (1 + len(HINGE_QUANTILES) if self.knots else 1)
        return own + (moments_width(cfg) if self.reads_statistics(cfg) else 0)

    def reads_statistics(self, cfg: "ModelConfig") -> bool:
        """Whether its layer also reads the statistics path's inputs (after its own)."""
        return self.gates is not None and cfg.paths_with_statistics

    @property
    def switch(self) -> str:
        """The flag that turns it off."""
        return "--no-" + flag_of(self.enabled_by)[2:]


def moments_of(x: torch.Tensor, lengths: torch.Tensor, cfg: "ModelConfig") -> torch.Tensor:
    return clip_moments(x, lengths)


def moments_width(cfg: "ModelConfig") -> int:
    return 2 * cfg.n_features


def peak_sizes(correlations: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L * F * F) lagged correlations -> (B, F * F): for each two inputs, the largest square of their correlation
    over the lags, either one leading: how closely they follow each other, whichever way and at whatever delay."""
    squares = (correlations ** 2).unflatten(1, (-1, n, n)).amax(dim=1)  # (B, F, F)
    return torch.maximum(squares, squares.transpose(1, 2)).flatten(1)


def lagged_correlations_of(x: torch.Tensor, lengths: torch.Tensor, cfg: "ModelConfig") -> torch.Tensor:
    """(B, T, F) -> (B, temporal_width(cfg)): the lagged correlations of the inputs, then, with
    cfg.temporal_differences, those of their first differences (frame to frame, zero beyond each clip); with
    cfg.temporal_sizes each series' peak_sizes, and with cfg.temporal_co_moments the inputs' co_moments."""
    series = [(x, lengths), first_differences(x, lengths)] if cfg.temporal_differences else [(x, lengths)]
    z_scores = [(z_scored(v, valid_mask(n, v.shape[1])), n) for v, n in series]  # (B, T, F), (B, T-1, F)
    correlations = [lagged_correlations(z, n, cfg.temporal_lags) for z, n in z_scores]
    parts = list(correlations)
    if cfg.temporal_sizes:
        parts.extend(peak_sizes(c, cfg.n_features) for c in correlations)
    if cfg.temporal_co_moments:
        parts.append(co_moments(*z_scores[0]))
    return torch.cat(parts, dim=1)


def temporal_width(cfg: "ModelConfig") -> int:
    per_series = len(cfg.temporal_lags) * cfg.n_features ** 2 + (cfg.n_features ** 2 if cfg.temporal_sizes else 0)
    co = math.comb(cfg.n_features + 2, 3) if cfg.temporal_co_moments else 0
    return (2 if cfg.temporal_differences else 1) * per_series + co


def event_timings_of(x: torch.Tensor, lengths: torch.Tensor, cfg: "ModelConfig") -> torch.Tensor:
    return event_timings(x, lengths)


def clip_shapes_of(x: torch.Tensor, lengths: torch.Tensor, cfg: "ModelConfig") -> torch.Tensor:
    return clip_shapes(x, lengths)


def clip_summaries_of(x: torch.Tensor, lengths: torch.Tensor, cfg: "ModelConfig") -> torch.Tensor:
    return clip_summaries(x, lengths)


def interval_quantiles_of(x: torch.Tensor, lengths: torch.Tensor, cfg: "ModelConfig") -> torch.Tensor:
    return interval_quantiles(x, lengths)


def kernel_shares_of(x: torch.Tensor, lengths: torch.Tensor, cfg: "ModelConfig", levels: torch.Tensor
                     ) -> torch.Tensor:
    return kernel_shares(x, lengths, levels)


STATS_PATH = LinearPath("stats", "statistics path", "stats_path", moments_of, moments_width)
GATED_PATHS: tuple[LinearPath, ...] = (  # beside the statistics path, each weighed per trait; the fit's tie order
    LinearPath("temporal", "temporal path", "temporal_path", lagged_correlations_of, temporal_width, screened=True,
               gates="temporal_gates"),
    LinearPath("events", "event path", "event_path", event_timings_of, lambda cfg: 4 * cfg.n_features ** 2,
               screened=True, gates="event_gates", fill="event_fill"),
    LinearPath("shapes", "shape path", "shape_path", clip_shapes_of, lambda cfg: SHAPE_STATISTICS * cfg.n_features,
               screened=True, gates="shape_gates"),
    LinearPath("curves", "curves path", "curves_path", clip_summaries_of,
               lambda cfg: CURVE_STATISTICS * cfg.n_features, screened=True, gates="curve_gates", knots="curve_knots"),
    LinearPath("kernels", "kernel path", "kernel_path", kernel_shares_of,
               lambda cfg: len(KERNEL_DILATIONS) * cfg.n_features * KERNELS_PER_DILATION, screened=True,
               gates="kernel_gates", fill="kernel_fill", levels="kernel_levels", fit_levels=kernel_levels),
    LinearPath("intervals", "interval path", "interval_path", interval_quantiles_of,
               lambda cfg: INTERVAL_STATISTICS * cfg.n_features, screened=True, gates="interval_gates",
               fill="interval_fill"),
)
LINEAR_PATHS: tuple[LinearPath, ...] = (STATS_PATH, *GATED_PATHS)
