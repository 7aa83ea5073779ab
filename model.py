"""The hybrid attention + Conv1d network for Big Five regression, the paper's published network, and checkpoints.

Two networks share their building blocks:
  HybridNet -- what the paper intended: a padding-aware attention-LSTM branch (per-frame embedding plus a
               sinusoidal time encoding, a batch-first LSTM, structured self-attention pooling over valid
               frames) and a Conv1d + squeeze-excite branch pooled over valid frames, joined by an MLP head.
               Either branch can be switched off (kind 'conv' or 'attention').
  PaperNet  -- what the paper published: state_dict keys and eval outputs identical to the original code
               (au_180.pt: 17 AU inputs; 3iternorm_180.pt: 22 inputs). Its attention branch is a constant
               (docs/network.md, "The paper network"), which is computed once per call.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
import subprocess
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from cli import option
from dataset import SPLITS, Normalization, Scaler, SplitRecord, TrainingRange
from errors import DataError
from openface import FEATURE_COLUMNS, FEATURE_SETS, TRAITS, Clip, feature_set_name
from tables import atomic_output

__version__ = "2.0.1"
CHECKPOINT_FORMAT = "openface-bigfive/2"
CHECKPOINT_FORMAT_V1 = "openface-bigfive/1"  # metadata in an untyped dict; still loads
KINDS = ("hybrid", "conv", "attention", "paper")
PAPER_FRAMES = 700  # the original pads every clip to exactly this many frames
PAPER_WINDOW = 699  # longer clips are cut into windows of at most this many frames and averaged
PAPER_GAP = 24  # PaperNet.forward_valid: the all-padding run kept (> the conv stack's receptive field, 16)
PAPER_EDGE = 8  # and the padding kept at the right end, where the convolutions' own zero padding shows
EVENT_Z = 2.5  # event path: a peak of an input beyond this many standard deviations of its clip is an event
EVENT_CAP = 180  # frames (6 s at 30 fps): the longest time from one event to another that the event path counts


class GatedPath(NamedTuple):
    """A linear path beside the statistics path that gates weigh per trait (its layer's name is its key)."""

    name: str  # as reports say it
    gates: str  # its gate buffer
    switch: str  # the flag that turns it off
    screened: bool  # many inputs of which few matter: fitted on the few (baselines.screened_ridge_fit)
    fill: str | None  # the buffer of training means that stand in for its inputs a clip lacks (NaN), if any


GATED_PATHS = {"temporal": GatedPath("temporal path", "temporal_gates", "--no-temporal-path", screened=False,
                                     fill=None),
               "events": GatedPath("event path", "event_gates", "--no-event-path", screened=True,
                                   fill="event_fill")}  # paths() order


@dataclass(frozen=True)
class ModelConfig:
    """A network's kind, architecture and sizes; attn_regression.py gets a flag for every field with an option().

    The defaults suit hundreds to thousands of clips (docs/network.md, "How good is the network");
    PRESETS["paper"] has the published sizes and the original conv branch."""

    kind: str = option("hybrid", "network: hybrid, the conv or attention branch alone, or the paper's published one",
                       choices=KINDS, flag="--model")
    n_features: int = 22
    n_traits: int = 5
    stats_path: bool = option(True, "a linear path from each clip's mean and std of every input, fitted by ridge "
                                    "regression before training; the branches then learn what it misses")
    temporal_path: bool = option(True, "with the statistics path: a second linear path from each clip's lagged "
                                       "cross-correlations between inputs (which movement follows which), fitted by "
                                       "ridge regression on what the statistics path misses")
    event_path: bool = option(True, "with the statistics path: a third linear path from the mean time between "
                                    "peaks of two inputs (how long after a nod a surprised look comes), fitted on "
                                    "what the other linear paths miss")
    temporal_lags: tuple[int, ...] = option((2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128), "lags of the temporal path "
                                            "in frames", minimum=1, metavar="FRAMES")
    embed_dim: int = option(64, "per-frame embedding and time-encoding width", minimum=1)
    lstm_hidden: int = option(64, "LSTM width of the attention branch", minimum=1)
    attn_dim: int = option(64, "d_a of the structured self-attention", minimum=1)
    attn_hops: int = option(8, "r, attention hops", minimum=1)
    conv_channels: tuple[int, ...] = option((32, 32, 32, 32, 32), "output channels of the conv layers", minimum=1,
                                            metavar="C")
    conv_kernels: tuple[int, ...] = option((5, 5, 5, 5, 5), "kernel widths of the conv layers", minimum=1,
                                           metavar="K")
    conv_dilations: tuple[int, ...] = option((1, 2, 4, 8, 16), "dilations of the conv layers (the receptive field is "
                                             "1 + sum((K - 1) * D) frames)", minimum=1, metavar="D")
    conv_residual: bool = option(True, "add each conv layer's input to its output where the widths match")
    conv_pool: str = option("meanstd", "pool the conv branch over valid frames by mean, or by mean and std",
                            choices=("mean", "meanstd"))
    squeeze_excite: bool = option(False, "squeeze-excite after each conv layer (the paper's conv branch)")
    se_reduction: int = option(16, "squeeze-excite reduction (each conv width must be at least this)", minimum=1)
    head_hidden: tuple[int, ...] = option((64,), "widths of the head's hidden layers", minimum=1, metavar="W")
    dropout: float = option(0.1, "dropout probability", minimum=0.0)
    members: int = option(1, "networks trained side by side from different initialisations and averaged "
                             "(one checkpoint)", minimum=1, flag="--ensemble")
    frame_time_scale: float = 100 / 30  # tau_t = t * scale in the time encoding (the paper's value)

    def __post_init__(self) -> None:
        for name in ("conv_channels", "conv_kernels", "conv_dilations", "head_hidden", "temporal_lags"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.kind not in KINDS:
            raise DataError(None, f"unknown model kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not self.conv_channels or not len(self.conv_channels) == len(self.conv_kernels) == len(self.conv_dilations):
            raise DataError(None, f"{len(self.conv_channels)} conv widths, {len(self.conv_kernels)} kernel widths and "
                                  f"{len(self.conv_dilations)} dilations; give one of each per conv layer")
        if self.squeeze_excite and min(self.conv_channels) < self.se_reduction:
            raise DataError(None, f"conv width {min(self.conv_channels)} is below the squeeze-excite reduction "
                                  f"{self.se_reduction}; use wider layers or a smaller --se-reduction")
        if not 0 <= self.dropout < 1:
            raise DataError(None, f"dropout must be in [0, 1), got {self.dropout}")
        if not self.stats_path and self.gated_paths:
            paths = [GATED_PATHS[name] for name in self.gated_paths]
            raise DataError(None, f"the {' and the '.join(p.name for p in paths)} need{'s' if len(paths) == 1 else ''} "
                                  f"the statistics path (add {' '.join(p.switch for p in paths)}, or drop "
                                  "--no-stats-path)")
        if self.temporal_path and not self.temporal_lags:
            raise DataError(None, "the temporal path needs at least one lag (add --no-temporal-path)")
        if self.kind == "paper":
            differs = [name for name, value in PAPER_SIZES.items() if getattr(self, name) != value and name != "dropout"]
            differs += ["members"] if self.members != 1 else []
            if differs:
                raise DataError(None, f"the paper's network has fixed sizes; drop the flags for {', '.join(differs)}")

    @property
    def gated_paths(self) -> tuple[str, ...]:
        """The linear paths beside the statistics path, each weighed per trait by its gates: their layers' names."""
        return tuple(name for name, on in (("temporal", self.temporal_path), ("events", self.event_path)) if on)

    @property
    def receptive_field(self) -> int:
        return 1 + sum((k - 1) * d for k, d in zip(self.conv_kernels, self.conv_dilations))


ADDED_LATER: dict[str, object] = {"event_path": False}  # config fields a format-2 record may lack: off there
LEGACY_ARCHITECTURE: dict[str, object] = {  # the conv branch and output of the first HybridNet (format 1)
    **ADDED_LATER, "stats_path": False, "temporal_path": False, "members": 1, "conv_dilations": (1, 1, 1, 1),
    "conv_residual": False, "conv_pool": "mean", "squeeze_excite": True}
PAPER_SIZES: dict[str, object] = {  # the published network (docs/paper.md)
    "embed_dim": 512, "lstm_hidden": 256, "attn_dim": 700, "attn_hops": 256, "conv_channels": (128, 256, 256, 256),
    "conv_kernels": (8, 5, 3, 3), "se_reduction": 16, "head_hidden": (256, 128), "dropout": 0.2,
    "frame_time_scale": 100 / 30, **LEGACY_ARCHITECTURE}


def paper_config(n_features: int, dropout: float = 0.2) -> ModelConfig:
    return ModelConfig(kind="paper", n_features=n_features, **{**PAPER_SIZES, "dropout": dropout})


PRESETS: dict[str, ModelConfig] = {  # attn_regression.py --preset: the architecture and sizes to start from
    "default": ModelConfig(),
    "paper": ModelConfig(**PAPER_SIZES),  # the published sizes and conv branch, without the statistics path
}


# ----------------------------------------------------------------------------------------------------------
# Building blocks


def sinusoidal_encoding(times: torch.Tensor, dim: int) -> torch.Tensor:
    """(T,) times -> (T, dim): [cos(t w_k)]_k ++ [sin(t w_k)]_k with w_k = 10000^(-k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=times.device) / half)
    angles = times.float()[:, None] * freqs[None]  # (T, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) lengths -> (B, steps) bool, True on valid positions."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # v: (B, C, T); mask: (B, T) or None for "every position"
        if mask is None:
            pooled = v.mean(dim=2)
        else:
            pooled = v.sum(dim=2) / mask.sum(dim=1, keepdim=True).clamp(min=1)  # v is zero where mask is False
        return v * self.scale(pooled)[:, :, None]

    def scale(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) channel means -> (B, C) channel weights in (0, 1)."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))


def lagged_correlations(x: torch.Tensor, lengths: torch.Tensor, lags: Sequence[int]) -> torch.Tensor:
    """(B, T, F) -> (B, len(lags) * F * F): for each lag tau, the correlation over each clip's valid frames of
    input i at t with input j at t + tau. Its asymmetry (i then j, or j then i) says which movement follows
    which, whatever their sizes, which clip means and spreads cannot say."""
    mask = valid_mask(lengths, x.shape[1])  # (B, T)
    mean, std = masked_moments(x.transpose(1, 2), mask)  # (B, F) each
    z = ((x - mean[:, None, :]) / (std[:, None, :] + 1e-3)) * mask[:, :, None]  # (B, T, F), zero beyond each clip
    parts = []
    for lag in lags:
        if lag >= x.shape[1]:
            parts.append(x.new_zeros(x.shape[0], x.shape[2] ** 2))
            continue
        pairs = (lengths - lag).clamp(min=1).to(x.dtype)  # (B,) frame pairs (t, t + lag) inside the clip
        products = torch.bmm(z[:, :-lag].transpose(1, 2), z[:, lag:])  # (B, F, F)
        parts.append(products.flatten(1) / pairs[:, None])
    return torch.cat(parts, dim=1)


def event_timings(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, 2 * 2F * F): for each input i's rises and dips and each input j's rises, first the mean
    time in frames from the last i-event to each j-rise that comes at most EVENT_CAP frames after one, then the
    share of j-rises that do, over each clip's valid frames; NaN where no j-rise does, or j never rises
    (HybridNet.filled fills those in). An event is a peak beyond EVENT_Z standard deviations of the clip. How long
    after a nod a surprised look comes is one such latency, how many smiles follow a nod one such share; lagged
    correlations spread both thinly over many lags."""
    steps, n = x.shape[1], x.shape[2]
    mask = valid_mask(lengths, steps)  # (B, T)
    mean, std = masked_moments(x.transpose(1, 2), mask)  # (B, F) each
    z = (x - mean[:, None, :]) / (std[:, None, :] + 1e-3)  # (B, T, F)
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


def masked_moments(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over valid positions: h (B, C, T), mask (B, T) -> (B, C), (B, C)."""
    m = mask[:, None, :].to(h.dtype)
    count = m.sum(dim=2).clamp(min=1)
    mean = (h * m).sum(dim=2) / count
    var = (((h - mean[:, :, None]) * m) ** 2).sum(dim=2) / count
    return mean, torch.sqrt(var + 1e-5)


def conv_branch(x: torch.Tensor, convs: Sequence[nn.Conv1d], ses: Sequence[SqueezeExcite] | None,
                dropout: nn.Module, lengths: torch.Tensor | None, residual: bool = False,
                pool: str = "mean") -> torch.Tensor:
    """Conv1d -> ReLU -> [SE] -> dropout blocks (each added to its input where `residual` and shapes allow), then
    pooled over positions: (B, T, F) -> (B, C), or (B, 2C) for pool 'meanstd'.

    lengths=None averages over every position, padding included (the paper); otherwise padded positions are
    zeroed after each block and excluded from every mean, so a clip's output does not depend on its padding."""
    h = x.transpose(1, 2)  # (B, F, T)
    valid, mask = lengths, None
    for k, conv in enumerate(convs):
        out = F.relu(conv(h))  # (B, C, T')
        if valid is not None:
            valid = valid + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1)
            mask = valid_mask(valid, out.shape[2])
            out = out * mask[:, None, :]
        if ses is not None:
            out = ses[k](out, mask)
        out = dropout(out)
        h = h + out if residual and out.shape == h.shape else out
    if mask is None:
        return h.mean(dim=2)
    mean, std = masked_moments(h, mask)
    return mean if pool == "mean" else torch.cat([mean, std], dim=1)


def make_convs(cfg: ModelConfig) -> tuple[list[nn.Conv1d], list[SqueezeExcite]]:
    chans = (cfg.n_features,) + cfg.conv_channels
    convs = [nn.Conv1d(chans[i], chans[i + 1], k, padding=d * (k // 2), dilation=d)
             for i, (k, d) in enumerate(zip(cfg.conv_kernels, cfg.conv_dilations))]
    ses = [SqueezeExcite(c, cfg.se_reduction) for c in cfg.conv_channels] if cfg.squeeze_excite else []
    return convs, ses


class SelfAttention(nn.Module):
    """Structured self-attention (Lin et al. 2017): A = softmax_t(W2 tanh(W1 H^T))."""

    def __init__(self, hidden: int, attn_dim: int, hops: int):
        super().__init__()
        self.W1 = nn.Parameter(torch.empty(attn_dim, hidden))
        self.W2 = nn.Parameter(torch.empty(hops, attn_dim))
        nn.init.xavier_uniform_(self.W1)
        nn.init.xavier_uniform_(self.W2)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # h: (B, T, H); mask: (B, T) -> attention weights (B, r, T)
        scores = torch.tanh(h @ self.W1.T) @ self.W2.T  # (B, T, r)
        scores = scores.transpose(1, 2).masked_fill(~mask[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=2)


class AttentionLSTM(nn.Module):
    def __init__(self, cfg: ModelConfig, batch_first: bool):
        super().__init__()
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.lstm_hidden, batch_first=batch_first)
        self.self_attn = SelfAttention(cfg.lstm_hidden, cfg.attn_dim, cfg.attn_hops)
        self.output_layer = nn.Linear(cfg.lstm_hidden, 1)

    def forward(self, e: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # e: (B, T, E) -> (B, r). The LSTM is unidirectional, so outputs at valid steps ignore the padding.
        h, _ = self.lstm(e)  # (B, T, H)
        attn = self.self_attn(h, valid_mask(lengths, h.shape[1]))  # (B, r, T)
        pooled = attn @ h  # (B, r, H)
        return self.output_layer(pooled).squeeze(-1)  # (B, r)


def time_embedding(cfg: ModelConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.SiLU(), nn.Linear(cfg.embed_dim, cfg.embed_dim))


# ----------------------------------------------------------------------------------------------------------
# Networks


class HybridNet(nn.Module):
    """The network the paper describes, with both branches working, and (cfg.stats_path) a linear path from each
    clip's input statistics: (B, T, F), lengths -> (B, 5).

    With the statistics path the output is

        stats(mean, std of x) + temporal_gates * temporal(lagged correlations of x)
                              + event_gates * events(event timings of x) + gates * head(branches)

    The linear paths are fitted before training (training.fit_linear_paths: the statistics path on the labels by
    ridge regression, then the temporal and event paths one after the other, each on what the paths before it
    miss, in the order that predicts each trait best on held-out clips; the temporal path by ridge, the event path
    by ridge on its few event timings that best predict that) and kept fixed; the head starts at zero and learns what
    the statistics path misses. The per-trait gates (training.choose_gates) open the temporal and event paths
    where their held-out predictions on the training clips help (folds over source videos), and the validation
    clips change that or open the branches only where it lowers their error significantly, so a path that does
    not help a trait leaves it alone. Outputs are clipped to [0, 1] in eval mode. Without the statistics path the
    output is sigmoid(head(branches)), as in the paper."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.use_attention = cfg.kind in ("hybrid", "attention")
        self.use_conv = cfg.kind in ("hybrid", "conv")
        width = 0
        if self.use_attention:
            self.au_emb = nn.Linear(cfg.n_features, cfg.embed_dim)
            self.time_embed = time_embedding(cfg)
            self.attention_lstm = AttentionLSTM(cfg, batch_first=True)
            width += cfg.attn_hops
        if self.use_conv:
            convs, ses = make_convs(cfg)
            self.convs = nn.ModuleList(convs)
            if ses:
                self.ses = nn.ModuleList(ses)
            width += cfg.conv_channels[-1] * (2 if cfg.conv_pool == "meanstd" else 1)
        self.dropout = nn.Dropout(cfg.dropout)
        layers: list[nn.Module] = []
        for hidden in cfg.head_hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        self.head = nn.Sequential(*layers, nn.Linear(width, cfg.n_traits))
        if cfg.stats_path:
            self.stats = nn.Linear(2 * cfg.n_features, cfg.n_traits)
            self.register_buffer("gates", torch.ones(cfg.n_traits))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        if cfg.temporal_path:
            self.temporal = nn.Linear(len(cfg.temporal_lags) * cfg.n_features ** 2, cfg.n_traits)
            self.register_buffer("temporal_gates", torch.zeros(cfg.n_traits))
            nn.init.zeros_(self.temporal.weight)
            nn.init.zeros_(self.temporal.bias)
        if cfg.event_path:
            self.events = nn.Linear(4 * cfg.n_features ** 2, cfg.n_traits)
            self.register_buffer("event_gates", torch.zeros(cfg.n_traits))
            self.register_buffer("event_fill", torch.zeros(4 * cfg.n_features ** 2))
            nn.init.zeros_(self.events.weight)
            nn.init.zeros_(self.events.bias)

    def input_statistics(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, 2F): each clip's mean and std of every input over its valid frames."""
        mean, std = masked_moments(x.transpose(1, 2), valid_mask(lengths, x.shape[1]))
        return torch.cat([mean, std], dim=1)

    def branches(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The head's output for the branches: (B, T, F) with zeros beyond each length -> (B, 5)."""
        parts = []
        if self.use_attention:
            times = torch.arange(x.shape[1], device=x.device) * self.cfg.frame_time_scale
            e = self.au_emb(x) + self.time_embed(sinusoidal_encoding(times, self.cfg.embed_dim))[None]  # (B, T, E)
            parts.append(self.attention_lstm(e, lengths))  # (B, r)
        if self.use_conv:
            ses = list(self.ses) if self.cfg.squeeze_excite else None
            parts.append(conv_branch(x, list(self.convs), ses, self.dropout, lengths, self.cfg.conv_residual,
                                     self.cfg.conv_pool))  # (B, C) or (B, 2C)
        return self.head(torch.cat(parts, dim=1))

    def temporal_statistics(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, lags * F * F), the temporal path's inputs."""
        return lagged_correlations(x, lengths, self.cfg.temporal_lags)

    def event_statistics(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, 4F * F), the event path's inputs: event_timings, NaN where a clip has none."""
        return event_timings(x, lengths)

    def filled(self, timings: torch.Tensor) -> torch.Tensor:
        """(B, 4F * F) event timings with each missing one replaced by its mean over the training clips (event_fill,
        set by training.fit_linear_paths), so a clip without such events gets that timing's average effect."""
        return torch.where(timings.isnan(), self.event_fill, timings)

    def paths(self, x: torch.Tensor, lengths: torch.Tensor, linear: Sequence[str] = ("temporal", "events")
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The statistics path's, the temporal path's, the event path's and the branches' contributions before
        their gates, (B, 5) each (networks with the statistics path); a path this network lacks, or that is not
        in `linear`, gives zeros."""
        x = x.masked_fill(~valid_mask(lengths, x.shape[1])[:, :, None], 0.0)
        stats = self.stats(self.input_statistics(x, lengths))
        lagged, events = torch.zeros_like(stats), torch.zeros_like(stats)
        if self.cfg.temporal_path and "temporal" in linear:
            lagged = self.temporal(self.temporal_statistics(x, lengths))
        if self.cfg.event_path and "events" in linear:
            events = self.events(self.filled(self.event_statistics(x, lengths)))
        return stats, lagged, events, self.branches(x, lengths)

    def parts(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear paths' contribution (gated) and the branches' (before their gates), (B, 5) each. The temporal
        and event paths' inputs are computed only when a trait uses them (never while training, when their gates
        are closed)."""
        used = [name for name in self.cfg.gated_paths if bool(getattr(self, GATED_PATHS[name].gates).any())]
        stats, lagged, events, branches = self.paths(x, lengths, used)
        linear = stats
        if "temporal" in used:
            linear = linear + self.temporal_gates * lagged
        if "events" in used:
            linear = linear + self.event_gates * events
        return linear, branches

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: (B, T, F), zero or garbage beyond each length; lengths: (B,) -> (B, 5)
        if not self.cfg.stats_path:
            x = x.masked_fill(~valid_mask(lengths, x.shape[1])[:, :, None], 0.0)
            return torch.sigmoid(self.branches(x, lengths))
        linear, residual = self.parts(x, lengths)
        out = linear + self.gates * residual
        return out if self.training else out.clamp(0.0, 1.0)


class Ensemble(nn.Module):
    """cfg.members HybridNets averaged: (B, T, F), lengths -> (B, 5). In training mode it returns every member's
    output, (K, B, 5), so that each member learns from its own error (F.mse_loss against y broadcast)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(HybridNet(replace(cfg, members=1)) for _ in range(cfg.members))

    def input_statistics(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.members[0].input_statistics(x, lengths)

    def temporal_statistics(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.members[0].temporal_statistics(x, lengths)

    def event_statistics(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.members[0].event_statistics(x, lengths)

    def paths(self, x: torch.Tensor, lengths: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The shared linear paths' contributions and the members' mean branch contribution."""
        first = self.members[0].paths(x, lengths)
        rest = [member.paths(x, lengths, linear=())[3] for member in self.members[1:]]
        return first[0], first[1], first[2], torch.stack([first[3], *rest]).mean(dim=0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([member(x, lengths) for member in self.members])  # (K, B, 5)
        return outputs if self.training else outputs.mean(dim=0)

    @property
    def stats(self) -> list[nn.Linear]:
        return [member.stats for member in self.members]

    @property
    def temporal(self) -> list[nn.Linear]:
        return [member.temporal for member in self.members]

    @property
    def gates(self) -> list[torch.Tensor]:
        return [member.gates for member in self.members]

    @property
    def temporal_gates(self) -> list[torch.Tensor]:
        return [member.temporal_gates for member in self.members]

    @property
    def events(self) -> list[nn.Linear]:
        return [member.events for member in self.members]

    @property
    def event_gates(self) -> list[torch.Tensor]:
        return [member.event_gates for member in self.members]

    @property
    def event_fill(self) -> list[torch.Tensor]:
        return [member.event_fill for member in self.members]


class PaperNet(nn.Module):
    """The published network: same parameters and eval outputs as the original code, batched.

    The original pads each clip to 700 frames and feeds the attention LSTM (batch, time, feature) without
    batch_first, taking the state of the last *padded* frame, so for clips shorter than 700 frames that branch
    is a constant c (one scalar repeated attn_hops times), computed here once per call. The conv branch
    averages over all 701 positions, padding included, as the original does. Clips of 700 frames or more
    (which the original cannot run) are cut into ceil(L / 699) near-equal windows whose outputs are averaged.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.au_emb = nn.Linear(cfg.n_features, cfg.embed_dim)
        self.time_embed = time_embedding(cfg)
        self.lstm = nn.LSTM(cfg.embed_dim, 128)  # unused by the original forward
        self.attention = nn.MultiheadAttention(128, num_heads=1)  # unused by the original forward
        self.attention_lstm = AttentionLSTM(cfg, batch_first=False)
        convs, ses = make_convs(cfg)
        self.conv1d_y1, self.conv1d_y2, self.conv1d_y3, self.conv1d_y4 = convs
        self.bn1 = nn.BatchNorm1d(cfg.conv_channels[0])  # unused by the original forward
        self.bn2 = nn.BatchNorm1d(cfg.conv_channels[1])  # unused by the original forward
        self.squeeze_excite1, self.squeeze_excite2, self.squeeze_excite3, self.squeeze_excite4 = ses
        self.dropout = nn.Dropout(cfg.dropout)
        width = cfg.attn_hops + cfg.conv_channels[-1]
        dims = (width,) + cfg.head_hidden + (cfg.n_traits,)
        self.linear_layer_stack = nn.Sequential(*[nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1)])

    def constant_branch(self) -> torch.Tensor:
        """The attention branch's output for any clip shorter than 700 frames: (attn_hops,)."""
        t_last = torch.tensor([float(PAPER_FRAMES - 1)], device=self.au_emb.bias.device) * self.cfg.frame_time_scale
        e = self.au_emb.bias + self.time_embed(sinusoidal_encoding(t_last, self.cfg.embed_dim))[0]  # (E,)
        z, _ = self.attention_lstm.lstm(e.view(1, 1, -1))  # one step from a zero state: (1, 1, H)
        c = self.attention_lstm.output_layer(z.view(1, -1))  # (1, 1); softmax over one position is 1
        return c.view(1).expand(self.cfg.attn_hops)

    def convs_and_ses(self) -> tuple[list[nn.Conv1d], list[SqueezeExcite]]:
        return ([self.conv1d_y1, self.conv1d_y2, self.conv1d_y3, self.conv1d_y4],
                [self.squeeze_excite1, self.squeeze_excite2, self.squeeze_excite3, self.squeeze_excite4])

    def head(self, y: torch.Tensor) -> torch.Tensor:
        """(B, C) conv features -> (B, 5), beside the constant attention branch."""
        c = self.constant_branch().expand(y.shape[0], -1)  # (B, r)
        return torch.sigmoid(self.linear_layer_stack(torch.cat([c, y], dim=1)))

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 700, F), zero beyond each clip -> (B, 5); every position computed, as the original does
        convs, ses = self.convs_and_ses()
        return self.head(conv_branch(x, convs, ses, self.dropout, None))

    def forward_valid(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """The eval-mode forward_padded, computing the convolutions over the first `frames` positions only.

        x: (B, frames, F), zero beyond each clip. Past the clips, every position of the original's 700 sees the
        same zero input, so after each conv + ReLU the all-padding run holds one value per clip and channel. It is
        kept as a short run of PAPER_GAP positions (PAPER_EDGE more keep the right edge's zero-padding effects),
        and the D = 700 - (frames + PAPER_GAP + PAPER_EDGE) positions left out are added back, as D copies of that
        value, to every mean over positions: the squeeze-excite means and the final average."""
        convs, ses = self.convs_and_ses()
        h = F.pad(x, (0, 0, 0, PAPER_GAP + PAPER_EDGE)).transpose(1, 2)  # (B, F, C_in)
        left_out = PAPER_FRAMES - h.shape[2]
        steps = PAPER_FRAMES
        constant_at = frames + PAPER_GAP // 2  # a position of the all-padding run at every layer
        for conv, se in zip(convs, ses):
            h = F.relu(conv(h))  # (B, C, C_in + 1)
            steps += 2 * conv.padding[0] - conv.kernel_size[0] + 1
            mean = (h.sum(dim=2) + left_out * h[:, :, constant_at]) / steps  # (B, C): the mean over `steps` positions
            h = h * se.scale(mean)[:, :, None]
        return self.head((h.sum(dim=2) + left_out * h[:, :, constant_at]) / steps)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: (B, T, F); lengths: (B,) -> (B, 5)
        x = x.masked_fill(~valid_mask(lengths, x.shape[1])[:, :, None], 0.0)
        longest = int(lengths.max())
        if not self.training and longest + PAPER_GAP + PAPER_EDGE <= PAPER_FRAMES:
            return self.forward_valid(x[:, :longest], longest)
        if longest < PAPER_FRAMES:
            return self.forward_padded(F.pad(x[:, :PAPER_FRAMES], (0, 0, 0, PAPER_FRAMES - min(x.shape[1], PAPER_FRAMES))))
        windows, owner = paper_windows(x, lengths)  # (W, 700, F), (W,)
        out = self.forward_padded(windows)  # (W, 5)
        sums = torch.zeros(x.shape[0], out.shape[1], dtype=out.dtype, device=out.device).index_add_(0, owner, out)
        counts = torch.bincount(owner, minlength=x.shape[0]).to(out.dtype)
        return sums / counts[:, None]


def paper_windows(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each clip into ceil(L / 699) near-equal windows, each zero-padded to 700 frames."""
    pieces, owner = [], []
    for b, length in enumerate(lengths.tolist()):
        n = max(1, math.ceil(length / PAPER_WINDOW))
        bounds = [round(i * length / n) for i in range(n + 1)]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            piece = x.new_zeros(PAPER_FRAMES, x.shape[2])
            piece[: stop - start] = x[b, start:stop]
            pieces.append(piece)
            owner.append(b)
    return torch.stack(pieces), torch.tensor(owner, device=x.device)


BRANCH_PREFIXES = {
    "conv": ("convs.", "ses.", "conv1d_y", "squeeze_excite"),
    "attention": ("au_emb.", "time_embed.", "attention_lstm."),
    "stats": ("stats.",),
    "temporal": ("temporal.",),
    "events": ("events.",),
}


def branch_parameters(model: nn.Module, branch: str) -> list[nn.Parameter]:
    """The parameters of one branch ('conv' or 'attention') of either network, e.g. to freeze them."""
    if branch not in BRANCH_PREFIXES:
        raise ValueError(f"unknown branch {branch!r}; choose one of {', '.join(BRANCH_PREFIXES)}")
    params = [p for name, p in model.named_parameters()
              if re.sub(r"^members\.\d+\.", "", name).startswith(BRANCH_PREFIXES[branch])]
    if not params:
        raise DataError(None, f"this {model.cfg.kind} network has no {branch} branch to freeze")
    return params


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.kind == "paper":
        return PaperNet(cfg)
    return Ensemble(cfg) if cfg.members > 1 else HybridNet(cfg)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints

PAPER_FEATURE_SETS: dict[int, str] = {17: "au", 22: "all"}  # au_180.pt and 3iternorm_180.pt, by input width
ZIP_MAGIC = b"PK\x03\x04"
TORCH_FILE_MAGIC = (ZIP_MAGIC, b"\x80\x02", b"\x80\x04", b"\x80\x05")  # zip archive, or legacy pickle


class CheckpointError(DataError):
    """A checkpoint file that cannot be used."""


@dataclass
class Checkpoint:
    """A network with everything needed to use it and to say where it came from. Its fields are written and read
    only by save_checkpoint/load_checkpoint; `source` is 'ours' or 'paper' (a published raw state_dict)."""

    model: nn.Module
    config: ModelConfig
    features: tuple[str, ...]
    traits: tuple[str, ...] = TRAITS
    normalization: Normalization = Normalization("none")
    source: str = "ours"
    split: SplitRecord | None = None
    seed: int | None = None
    data_fingerprint: str | None = None
    train_options: dict = field(default_factory=dict)  # the training run's options, as training.py records them
    code_version: str = ""
    retrained_from: str | None = None
    metrics: dict = field(default_factory=dict)  # validation metrics of the saved epoch
    retrain: dict | None = None  # held-out metrics before and after retraining
    training_state: dict | None = field(default=None, repr=False)  # optimiser, scheduler and loop state
    training_range: TrainingRange | None = None  # the per-clip statistics it was trained on (None: not recorded)
    sha256: str = ""  # of the bytes it was loaded from (never saved in the file)


def input_scaler(ckpt: Checkpoint, clips: Iterable[Clip]) -> Scaler:
    """The input transform of a checkpoint for the clips it is about to score: the one place every script gets it.

    Our checkpoints and retrained paper weights use the statistics stored in them; the published raw weights
    use the paper's min-max of the gaze/pose columns over `clips` (only then is `clips` read)."""
    return ckpt.normalization.scaler(ckpt.features, clips)


def code_version() -> str:
    """The package version plus the git commit of this file's repository, when there is one."""
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write weights, config and every field to one file, atomically."""
    fields = {
        "features": list(ckpt.features), "traits": list(ckpt.traits), "normalization": asdict(ckpt.normalization),
        "source": ckpt.source, "split": asdict(ckpt.split) if ckpt.split is not None else None, "seed": ckpt.seed,
        "data_fingerprint": ckpt.data_fingerprint, "train_options": ckpt.train_options,
        "code_version": ckpt.code_version or code_version(), "retrained_from": ckpt.retrained_from,
        "metrics": ckpt.metrics, "retrain": ckpt.retrain,
        "training_range": asdict(ckpt.training_range) if ckpt.training_range is not None else None,
    }
    payload = {"format": CHECKPOINT_FORMAT, "config": config_record(ckpt.config),
               "state_dict": {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()}, "fields": fields}
    if ckpt.training_state is not None:
        payload["training_state"] = ckpt.training_state
    buffer = io.BytesIO()  # serialised in memory, so a full disk is an OSError naming the file, not torch's own
    torch.save(payload, buffer)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def config_record(cfg: ModelConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def checkpoint_bytes(path: Path) -> bytes:
    """The file's bytes, read once: the model is loaded from, and its SHA-256 computed over, these same bytes, so
    a file replaced during a run can never give one model with another's hash."""
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise CheckpointError(path, f"cannot be read: {err.strerror or err}") from None


def check_archive(path: Path, data: bytes) -> None:
    """Refuse, before anything is unpacked, a zip archive whose tensor records are compressed: torch.save stores
    them as they are, so a compressed one could unpack to any size (a 2 MB file to gigabytes)."""
    if not data.startswith(ZIP_MAGIC):
        return  # the legacy pickle format: nothing compressed, its size is the file's
    try:
        records = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError):
        raise CheckpointError(path, "not a readable PyTorch checkpoint (truncated or damaged)") from None
    packed = [r for r in records if r.compress_type != zipfile.ZIP_STORED]
    if packed:
        largest = max(packed, key=lambda r: r.file_size)
        raise CheckpointError(path, f"holds compressed records, which torch.save never writes ({largest.filename} "
                                    f"would unpack to {largest.file_size / 2**20:,.0f} MiB); refusing to unpack it")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Our checkpoints (this format or the first) or the paper's raw state_dicts, loaded without executing
    code (weights_only=True) from one read of the file, whose SHA-256 the checkpoint carries; model in eval mode.
    Anything inconsistent is refused with one line."""
    path = Path(path)
    data = checkpoint_bytes(path)
    if not data.startswith(TORCH_FILE_MAGIC):
        raise CheckpointError(path, "not a PyTorch checkpoint file (another kind of file, or empty)")
    check_archive(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for truncated, foreign or unsafe files
        unsafe = unsafe_globals(data)
        if unsafe:
            raise CheckpointError(path, f"refused: the file holds Python objects ({', '.join(unsafe[:3])}), not just "
                                        "weights (checkpoints are loaded with weights_only=True)") from None
        raise CheckpointError(path, "not a readable PyTorch checkpoint (truncated or damaged)") from None
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"not a checkpoint: it holds a {type(payload).__name__}")
    newer = newer_format(payload.get("format"))
    if newer:
        fields = payload.get("fields")
        version = fields.get("code_version", "unknown") if isinstance(fields, dict) else "unknown"
        raise CheckpointError(path, f"written by a newer version of this code ({version}, format {newer}); update "
                                    f"this repository to read it (this one reads {CHECKPOINT_FORMAT})")
    if payload.get("format") in (CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_V1):
        ckpt = _load_ours(path, payload)
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        ckpt = _load_paper(path, payload)
    else:
        raise CheckpointError(path, "not a known checkpoint: neither this project's format nor a raw state_dict")
    ckpt.sha256 = hashlib.sha256(data).hexdigest()
    ckpt.model.to(device).eval()
    return ckpt


def unsafe_globals(data: bytes) -> list[str]:
    """The Python objects a checkpoint's pickle names beyond plain weights (what weights_only=True refuses)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
    except Exception:  # a damaged file: no list to give
        return []


def newer_format(value) -> str | None:
    """The format name when it is this project's, with a number above CHECKPOINT_FORMAT's."""
    prefix, _, number = CHECKPOINT_FORMAT.rpartition("/")
    if isinstance(value, str) and value.startswith(prefix + "/"):
        theirs = value[len(prefix) + 1:]
        if theirs.isdigit() and int(theirs) > int(number):
            return value
    return None


def _load_ours(path: Path, payload: dict) -> Checkpoint:
    try:
        saved = dict(payload["config"])
        if payload.get("format") == CHECKPOINT_FORMAT_V1:
            saved = {**LEGACY_ARCHITECTURE, "conv_dilations": (1,) * len(saved["conv_kernels"]), **saved}
        saved = {**ADDED_LATER, **saved}
        cfg = ModelConfig(**saved)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"bad model config: {err}") from None
    try:
        fields = payload["fields"] if payload["format"] == CHECKPOINT_FORMAT else _fields_from_v1(payload["meta"])
        model = build_model(cfg)
        ckpt = Checkpoint(
            model=model, config=cfg, features=tuple(_strings(fields["features"])),
            traits=tuple(_strings(fields.get("traits", list(TRAITS)))),
            normalization=_normalization(fields["normalization"]), source=str(fields.get("source", "ours")),
            split=_split_record(fields.get("split")), seed=_optional(fields.get("seed"), int),
            data_fingerprint=_optional(fields.get("data_fingerprint"), str),
            train_options=dict(fields.get("train_options") or {}), code_version=str(fields.get("code_version", "")),
            retrained_from=_optional(fields.get("retrained_from"), str), metrics=dict(fields.get("metrics") or {}),
            retrain=fields.get("retrain"), training_state=payload.get("training_state"),
            training_range=_training_range(fields.get("training_range")))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(path, f"bad checkpoint field: {type(err).__name__} {err}") from None
    _check_consistent(path, ckpt)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(path, "no state_dict of weights")
    if cfg.event_path and not any(str(key).endswith(GATED_PATHS["events"].fill) for key in state):
        raise CheckpointError(path, f"its event path is the first one (code {ckpt.code_version or 'before 2.0.1'}), "
                                    "whose inputs this code counts differently: retrain it")
    _load_state(path, model, state)
    return ckpt


def _fields_from_v1(meta: dict) -> dict:
    """The fields of a first-format checkpoint, whose metadata was an untyped dict."""
    fields = dict(meta)
    fields["source"] = "ours"
    return fields


def _strings(values) -> list[str]:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"expected a list of names, found {values!r:.80}")
    return list(values)


def _optional(value, kind):
    return None if value is None else kind(value)


def _normalization(record: dict) -> Normalization:
    kind = record.get("kind")
    if kind == "standard" and "mean" in record:  # the first format's spelling
        return Normalization("standard", tuple(map(float, record["mean"])), tuple(map(float, record["std"])))
    if kind not in Normalization.KINDS:
        raise ValueError(f"unknown normalization kind {kind!r}")
    return Normalization(kind, tuple(map(float, record.get("offset", ()))), tuple(map(float, record.get("scale", ()))))


def _training_range(record: dict | None) -> TrainingRange | None:
    if record is None:
        return None
    return TrainingRange(tuple(map(float, record["low"])), tuple(map(float, record["high"])))


def _split_record(record: dict | None) -> SplitRecord | None:
    if record is None:
        return None
    assignment = record["assignment"]
    if not isinstance(assignment, dict) or not all(isinstance(k, str) and v in SPLITS for k, v in assignment.items()):
        raise ValueError("the split assignment must map source videos to train, val or test")
    return SplitRecord(str(record["path"]), str(record["sha256"]), dict(assignment))


def _check_consistent(path: Path, ckpt: Checkpoint) -> None:
    """Refuse a checkpoint whose fields disagree with its network or with the feature schema."""
    n = ckpt.config.n_features
    if len(ckpt.features) != n:
        raise CheckpointError(path, f"lists {len(ckpt.features)} features for a network with {n} inputs")
    unknown = [f for f in ckpt.features if f not in FEATURE_COLUMNS]
    if unknown or len(set(ckpt.features)) != n:
        raise CheckpointError(path, f"feature list is not a set of OpenFace feature columns "
                                    f"({', '.join(unknown) or 'a name repeats'})")
    if tuple(ckpt.traits) != TRAITS or ckpt.config.n_traits != len(TRAITS):
        raise CheckpointError(path, f"traits {list(ckpt.traits)} with {ckpt.config.n_traits} outputs are not the "
                                    f"five traits {', '.join(TRAITS)}")
    span = ckpt.training_range
    if span is not None and not (len(span.low) == len(span.high) == 2 * n):
        raise CheckpointError(path, f"training range has {len(span.low)} lows and {len(span.high)} highs for the "
                                    f"{2 * n} clip statistics of {n} features")
    norm = ckpt.normalization
    if norm.kind in ("standard", "minmax"):
        if len(norm.offset) != n or len(norm.scale) != n:
            raise CheckpointError(path, f"normalisation has {len(norm.offset)} offsets and {len(norm.scale)} scales "
                                        f"for {n} features")
        if not all(math.isfinite(v) for v in norm.offset + norm.scale) or min(norm.scale) <= 0:
            raise CheckpointError(path, "normalisation holds non-finite values or a scale that is not positive")


def _load_paper(path: Path, state: dict) -> Checkpoint:
    if "conv1d_y1.weight" not in state:
        raise CheckpointError(path, "not a known checkpoint: a state_dict without conv1d_y1.weight "
                                    f"(keys start {', '.join(list(state)[:4])})")
    n_features = int(state["conv1d_y1.weight"].shape[1]) if state["conv1d_y1.weight"].dim() == 3 else -1
    if n_features not in PAPER_FEATURE_SETS:
        raise CheckpointError(path, f"{n_features} input features: the published networks have "
                                    f"{' or '.join(map(str, PAPER_FEATURE_SETS))}")
    cfg = paper_config(n_features)
    model = build_model(cfg)
    _load_state(path, model, state)
    return Checkpoint(model, cfg, features=FEATURE_SETS[PAPER_FEATURE_SETS[n_features]],
                      normalization=Normalization("paper"), source="paper")


def _load_state(path: Path, model: nn.Module, state: dict) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing keys {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
        if unknown:
            parts.append(f"unknown keys {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else ""))
        raise CheckpointError(path, "; ".join(parts))
    for key, value in expected.items():
        if isinstance(state[key], torch.Tensor) and state[key].is_floating_point() != value.is_floating_point():
            found, wanted = (str(t.dtype).replace("torch.", "") for t in (state[key], value))
            raise CheckpointError(path, f"{key} holds {found} values where the network has {wanted} (weights are "
                                        "floating point)")
        if not isinstance(state[key], torch.Tensor) or tuple(state[key].shape) != tuple(value.shape):
            found = tuple(state[key].shape) if isinstance(state[key], torch.Tensor) else type(state[key]).__name__
            raise CheckpointError(path, f"shapes match no known network: {key} is {found}, expected "
                                        f"{tuple(value.shape)}")
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise CheckpointError(path, f"{key} holds NaN or infinite weights")
    model.load_state_dict(state, strict=True)


def check_features(ckpt: Checkpoint, features: Sequence[str], source: str | Path) -> None:
    """Refuse data whose feature columns differ from the model's, naming the columns."""
    expected = list(ckpt.features)
    if list(features) == expected:
        return
    lacking = [c for c in expected if c not in features]
    extra = [c for c in features if c not in expected]
    parts = [f"the model expects feature set {feature_set_name(expected) or expected}"]
    if lacking:
        parts.append(f"the data lacks {', '.join(lacking)}")
    if extra:
        parts.append(f"the data has extra {', '.join(extra)}")
    raise CheckpointError(source, "; ".join(parts))
