"""The paper's published network (docs/paper.md): the same state_dict keys and eval outputs as the original code
(au_180.pt: 17 AU inputs; 3iternorm_180.pt: 22 inputs), batched, and the windows that let it score clips of any
length."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from featurizers import LINEAR_PATHS
from layers import (AttentionLSTM, SqueezeExcite, conv_branch, make_convs, sinusoidal_encoding, time_embedding,
                    valid_mask)

if TYPE_CHECKING:
    from model import ModelConfig

PAPER_ARCHITECTURE: dict[str, object] = {  # the published network's sizes and parts, as model.ModelConfig fields
    "embed_dim": 512, "lstm_hidden": 256, "attn_dim": 700, "attn_hops": 256, "conv_channels": (128, 256, 256, 256),
    "conv_kernels": (8, 5, 3, 3), "conv_dilations": (1, 1, 1, 1), "conv_residual": False, "conv_pool": "mean",
    "squeeze_excite": True, "se_reduction": 16, "head_hidden": (256, 128), "dropout": 0.2,
    "frame_time_scale": 100 / 30, **{path.enabled_by: False for path in LINEAR_PATHS}, "members": 1}
PAPER_FRAMES = 700  # the original pads every clip to exactly this many frames
PAPER_WINDOW = 699  # longer clips are cut into windows of at most this many frames and averaged
PAPER_GAP = 24  # PaperNet.forward_valid: the all-padding run kept (> the conv stack's receptive field, 16)
PAPER_EDGE = 8  # and the padding kept at the right end, where the convolutions' own zero padding shows


class PaperNet(nn.Module):
    """The published network: same parameters and eval outputs as the original code, batched.

    The original pads each clip to 700 frames and feeds the attention LSTM (batch, time, feature) without
    batch_first, taking the state of the last *padded* frame, so for clips shorter than 700 frames that branch
    is a constant c (one scalar repeated attn_hops times), computed here once per call. The conv branch
    averages over all 701 positions, padding included, as the original does. Clips of 700 frames or more
    (which the original cannot run) are cut into ceil(L / 699) near-equal windows whose outputs are averaged.
    """

    def __init__(self, cfg: "ModelConfig"):
        super().__init__()
        self.cfg = cfg
        self.au_emb = nn.Linear(cfg.n_features, cfg.embed_dim)
        self.time_embed = time_embedding(cfg.embed_dim)
        self.lstm = nn.LSTM(cfg.embed_dim, 128)  # unused by the original forward
        self.attention = nn.MultiheadAttention(128, num_heads=1)  # unused by the original forward
        self.attention_lstm = AttentionLSTM(cfg.embed_dim, cfg.lstm_hidden, cfg.attn_dim, cfg.attn_hops,
                                            batch_first=False)
        convs, ses = make_convs(cfg.n_features, cfg.conv_channels, cfg.conv_kernels, cfg.conv_dilations,
                                cfg.se_reduction)
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
