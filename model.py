"""The networks for Big Five regression from OpenFace frames, and their configuration.

  HybridNet -- what the paper intended, made to work: members of Branches (a padding-aware attention-LSTM branch
               and a Conv1d branch joined by an MLP head; either branch can be off, kind 'conv' or 'attention'),
               averaged, on top of linear paths from each clip's statistics (featurizers.LINEAR_PATHS) that ridge
               regression fits before training.
  PaperNet  -- what the paper published (paper_net.py): state_dict keys and eval outputs of the original code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from cli import option
from errors import DataError
from featurizers import GATED_PATHS, HINGE_QUANTILES, LINEAR_PATHS, STATS_PATH, LinearPath, hinges
from layers import AttentionLSTM, conv_branch, make_convs, sinusoidal_encoding, time_embedding, valid_mask
from paper_net import PAPER_ARCHITECTURE, PaperNet

KINDS = ("hybrid", "conv", "attention", "paper")


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
                                       "cross-correlations between inputs (which movement follows which, which move "
                                       "together), fitted on the few that predict a trait")
    event_path: bool = option(True, "with the statistics path: a third linear path from the mean time between "
                                    "peaks of two inputs (how long after a nod a surprised look comes), fitted on "
                                    "the few that predict a trait")
    shape_path: bool = option(True, "with the statistics path: a fourth linear path from what each input's mean and "
                                     "std leave out (squares, quantiles, roughness, autocorrelation, crossings, run "
                                     "lengths, spikes, drift), fitted on the few that predict a trait")
    curves_path: bool = option(True, "with the statistics path: a fifth linear path of piecewise-linear functions "
                                      "of each input's statistics, shape statistics, extremes and course (hinges "
                                      "at the training clips' quantiles: what matters past a threshold or along a "
                                      "curve), fitted on the few that predict a trait")
    kernel_path: bool = option(True, "with the statistics path: a sixth linear path from random convolution "
                                      "kernels (MiniRocket's, at dilations of 1 to 32 frames over each input): the "
                                      "share of each clip's frames where a kernel's response passes a level set at "
                                      "the training clips' quantiles, fitted on the few that predict a trait")
    interval_path: bool = option(True, "with the statistics path: a seventh linear path from the 10th, 50th and "
                                        "90th percentiles of each input and of its first difference over the whole "
                                        "clip, its halves, quarters and eighths (QUANT's intervals: where in a clip "
                                        "an input moves more, or faster), fitted on the few that predict a trait")
    paths_with_statistics: bool = option(True, "fit each of the paths above together with the clip statistics "
                                               "(its layer also reads each input's mean and std, so it can take "
                                               "over a trait the statistics read in the wrong form) and weigh it "
                                               "against the statistics path by held-out predictions; off: fit "
                                               "each on what the statistics path misses")
    temporal_lags: tuple[int, ...] = option((0, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128), "lags of the temporal "
                                            "path in frames (0: which inputs move together)", minimum=0,
                                            metavar="FRAMES")
    temporal_differences: bool = option(True, "the temporal path also correlates the inputs' first differences "
                                              "(how fast each moves), so movements that go together quickly show "
                                              "apart from slow drifts that do not")
    temporal_sizes: bool = option(True, "the temporal path also reads, for each two inputs, the largest square of "
                                        "their correlation over its lags, either one leading (how closely two "
                                        "movements follow each other, whichever way and at whatever delay)")
    temporal_co_moments: bool = option(True, "the temporal path also reads the mean product of every three inputs' "
                                             "z-scores (one input moving with the size of another's excursions; two "
                                             "moving together where a third is high)")
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
    members: int = option(1, "networks trained side by side from different initialisations and averaged, on one "
                             "set of linear paths (one checkpoint)", minimum=1, flag="--ensemble")
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
        switched_on = [path for path in GATED_PATHS if getattr(self, path.enabled_by)]
        if not self.stats_path and switched_on:
            names = [f"the {p.name}" for p in switched_on]
            spoken = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            raise DataError(None, f"{spoken} need{'s' if len(names) == 1 else ''} the statistics path (add "
                                  f"{' '.join(p.switch for p in switched_on)}, or drop {STATS_PATH.switch})")
        if self.temporal_path and not self.temporal_lags:
            raise DataError(None, "the temporal path needs at least one lag (add --no-temporal-path)")
        if self.kind == "paper":
            differs = [name for name, value in PAPER_ARCHITECTURE.items()
                       if getattr(self, name) != value and name != "dropout"]
            if differs:
                raise DataError(None, f"the paper's network has fixed sizes; drop the flags for {', '.join(differs)}")

    @property
    def linear_paths(self) -> tuple[LinearPath, ...]:
        """The linear paths this network has: the statistics path first, then its gated paths."""
        return tuple(path for path in LINEAR_PATHS if getattr(self, path.enabled_by))

    @property
    def gated_paths(self) -> tuple[LinearPath, ...]:
        """The linear paths beside the statistics path, each weighed per trait by its gates."""
        return tuple(path for path in self.linear_paths if path.gates is not None)

    @property
    def receptive_field(self) -> int:
        return 1 + sum((k - 1) * d for k, d in zip(self.conv_kernels, self.conv_dilations))


def paper_config(n_features: int, dropout: float = 0.2) -> ModelConfig:
    return ModelConfig(kind="paper", n_features=n_features, **{**PAPER_ARCHITECTURE, "dropout": dropout})


PRESETS: dict[str, ModelConfig] = {  # attn_regression.py --preset: the architecture and sizes to start from
    "default": ModelConfig(),
    "paper": ModelConfig(**PAPER_ARCHITECTURE),  # the published sizes and conv branch, as a HybridNet
}


class Branches(nn.Module):
    """The attention-LSTM branch and the conv branch (kind 'attention' or 'conv' keeps one) joined by an MLP head:
    (B, T, F) zero beyond each length, lengths -> (B, 5) before any output activation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.use_attention = cfg.kind in ("hybrid", "attention")
        self.use_conv = cfg.kind in ("hybrid", "conv")
        width = 0
        if self.use_attention:
            self.au_emb = nn.Linear(cfg.n_features, cfg.embed_dim)
            self.time_embed = time_embedding(cfg.embed_dim)
            self.attention_lstm = AttentionLSTM(cfg.embed_dim, cfg.lstm_hidden, cfg.attn_dim, cfg.attn_hops,
                                                batch_first=True)
            width += cfg.attn_hops
        if self.use_conv:
            convs, ses = make_convs(cfg.n_features, cfg.conv_channels, cfg.conv_kernels, cfg.conv_dilations,
                                    cfg.se_reduction if cfg.squeeze_excite else None)
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
        if cfg.stats_path:  # the branches start at zero and learn what the linear paths miss
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
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


class HybridNet(nn.Module):
    """cfg.members Branches averaged and, with the statistics path, linear paths from each clip's statistics:
    (B, T, F), lengths -> (B, 5); in training mode, with several members, every member's output, (K, B, 5), so
    that each learns from its own error (F.mse_loss against y broadcast).

    With the statistics path each member's output is

        stats(mean, std of x) + sum over gated paths p of p.gates * p(featurizer of x[, mean, std of x])
        + branch_gates * branches

    The linear paths are fitted before training and kept fixed (stacking.fit_linear_paths: each gated path together
    with the clip statistics, as the difference it makes to the statistics path, stacked by held-out predictions);
    the branches start at zero and learn what the statistics path misses; per-trait gates (stacking.calibrate_gates)
    open a gated path or the branches only where held-out clips say it helps significantly. Outputs are clipped to
    [0, 1] in eval mode. Without the statistics path the output is sigmoid(branches), as in the paper."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(Branches(cfg) for _ in range(cfg.members))
        if cfg.stats_path:
            self.register_buffer("branch_gates", torch.ones(cfg.n_traits))
        for path in cfg.linear_paths:
            layer = nn.Linear(path.layer_width(cfg), cfg.n_traits).requires_grad_(False)  # fitted by ridge, then fixed
            setattr(self, path.key, layer)
            if path.gates is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
                self.register_buffer(path.gates, torch.zeros(cfg.n_traits))
            if path.fill is not None:
                self.register_buffer(path.fill, torch.zeros(path.width(cfg)))
            if path.knots is not None:
                self.register_buffer(path.knots, torch.zeros(len(HINGE_QUANTILES), path.width(cfg)))
            if path.levels is not None:
                self.register_buffer(path.levels, torch.zeros(path.width(cfg)))

    def path_inputs(self, path: LinearPath, x: torch.Tensor, lengths: torch.Tensor, raw: bool = False,
                    moments: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) zero beyond each length -> (B, path.layer_width(cfg)): the path's featurizer, with a clip's missing
        inputs replaced by their training means (its fill buffer) and, with knots, hinged at them (its knots
        buffer); both buffers are set by stacking.fit_linear_paths, which reads the `raw` values (B, path.width(cfg)):
        the featurizer's alone, NaN where a clip lacks an input. A featurizer with levels reads its levels buffer
        (set by the fit before the others). A path that reads the clip statistics takes them from `moments` (the
        statistics path's inputs, (B, 2F)) when the caller has them, else computes them."""
        values = path.featurize(x, lengths, self.cfg, *([getattr(self, path.levels)] if path.levels else []))
        if raw:
            return values
        if moments is None and path.reads_statistics(self.cfg):
            moments = self.path_inputs(STATS_PATH, x, lengths)
        return self.finished_inputs(path, values, moments)

    def finished_inputs(self, path: LinearPath, values: torch.Tensor, moments: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """A path's raw featurizer values (B, width) as its layer reads them: filled in, then hinged, then followed
        by the statistics path's inputs `moments` (B, 2F) where the path reads them (LinearPath.reads_statistics)."""
        if path.fill is not None:
            values = torch.where(values.isnan(), getattr(self, path.fill).to(values.dtype), values)
        if path.knots is not None:
            values = hinges(values, getattr(self, path.knots).to(values.dtype))
        if path.reads_statistics(self.cfg):
            values = torch.cat([values, moments.to(values.dtype)], dim=1)
        return values

    def gates_of(self, path: LinearPath) -> torch.Tensor:
        return getattr(self, path.gates)

    def contributions(self, x: torch.Tensor, lengths: torch.Tensor,
                      paths: Sequence[LinearPath] | None = None) -> dict[str, torch.Tensor]:
        """Before their gates, (B, 5) each: the contribution of each linear path in `paths` (default: all this
        network has), by its key, and the members' mean branch output ('branches')."""
        x = x.masked_fill(~valid_mask(lengths, x.shape[1])[:, :, None], 0.0)
        moments = self.path_inputs(STATS_PATH, x, lengths)
        out = {path.key: getattr(self, path.key)(self.path_inputs(path, x, lengths, moments=moments))
               for path in (self.cfg.linear_paths if paths is None else paths)}
        out["branches"] = torch.stack([member(x, lengths) for member in self.members]).mean(dim=0)
        return out

    def linear(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F) zero beyond each length -> (B, 5): the linear paths' gated sum. A gated path's inputs are
        computed only when a trait uses it (never while training, when its gates are closed)."""
        moments = self.path_inputs(STATS_PATH, x, lengths)  # (B, 2F), read by the gated paths too
        out = self.stats(moments)
        for path in self.cfg.gated_paths:
            gates = self.gates_of(path)
            if bool(gates.any()):
                out = out + gates * getattr(self, path.key)(self.path_inputs(path, x, lengths, moments=moments))
        return out

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: (B, T, F), zero or garbage beyond each length; lengths: (B,) -> (B, 5), or (K, B, 5) (see above)
        x = x.masked_fill(~valid_mask(lengths, x.shape[1])[:, :, None], 0.0)
        branches = torch.stack([member(x, lengths) for member in self.members])  # (K, B, 5)
        if self.cfg.stats_path:
            outputs = self.linear(x, lengths) + self.branch_gates * branches  # (K, B, 5)
        else:
            outputs = torch.sigmoid(branches)
        if self.training:
            return outputs if len(self.members) > 1 else outputs[0]
        return (outputs.clamp(0.0, 1.0) if self.cfg.stats_path else outputs).mean(dim=0)


BRANCH_MODULES = {  # the submodules of each branch, in a HybridNet's members and in the PaperNet
    "conv": ("convs", "ses", "conv1d_y", "squeeze_excite"),
    "attention": ("au_emb", "time_embed", "attention_lstm"),
}


def branch_parameters(model: nn.Module, branch: str) -> list[nn.Parameter]:
    """The parameters of one branch ('conv' or 'attention') of either network, e.g. to freeze them."""
    if branch not in BRANCH_MODULES:
        raise ValueError(f"unknown branch {branch!r}; choose one of {', '.join(BRANCH_MODULES)}")
    holders = list(model.members) if isinstance(model, HybridNet) else [model]
    params = [p for holder in holders for name, p in holder.named_parameters()
              if name.split(".")[0].rstrip("0123456789") in BRANCH_MODULES[branch]]
    if not params:
        raise DataError(None, f"this {model.cfg.kind} network has no {branch} branch to freeze")
    return params


def build_model(cfg: ModelConfig) -> nn.Module:
    return PaperNet(cfg) if cfg.kind == "paper" else HybridNet(cfg)
