"""The building blocks both networks share: masks and masked moments, the time encoding, the conv stack with
squeeze-excite, and the structured self-attention LSTM. Sizes come as arguments, so the blocks know no config."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

VARIANCE_FLOOR = 1e-5  # added to every masked variance, so the std of a constant input is small, not 0


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) lengths -> (B, steps) bool, True on valid positions."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def masked_moments(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over valid positions: h (B, C, T), mask (B, T) -> (B, C), (B, C)."""
    m = mask[:, None, :].to(h.dtype)
    count = m.sum(dim=2).clamp(min=1)
    mean = (h * m).sum(dim=2) / count
    var = (((h - mean[:, :, None]) * m) ** 2).sum(dim=2) / count
    return mean, torch.sqrt(var + VARIANCE_FLOOR)


def sinusoidal_encoding(times: torch.Tensor, dim: int) -> torch.Tensor:
    """(T,) times -> (T, dim): [cos(t w_k)]_k ++ [sin(t w_k)]_k with w_k = 10000^(-k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=times.device) / half)
    angles = times.float()[:, None] * freqs[None]  # (T, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def time_embedding(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))


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


def make_convs(inputs: int, channels: Sequence[int], kernels: Sequence[int], dilations: Sequence[int],
               se_reduction: int | None) -> tuple[list[nn.Conv1d], list[SqueezeExcite]]:
    """The conv layers ('same' padding) and, unless se_reduction is None, a squeeze-excite after each."""
    chans = (inputs, *channels)
    convs = [nn.Conv1d(chans[i], chans[i + 1], k, padding=d * (k // 2), dilation=d)
             for i, (k, d) in enumerate(zip(kernels, dilations))]
    ses = [SqueezeExcite(c, se_reduction) for c in channels] if se_reduction is not None else []
    return convs, ses


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
    def __init__(self, embed_dim: int, hidden: int, attn_dim: int, hops: int, batch_first: bool):
        super().__init__()
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=batch_first)
        self.self_attn = SelfAttention(hidden, attn_dim, hops)
        self.output_layer = nn.Linear(hidden, 1)

    def forward(self, e: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # e: (B, T, E) -> (B, r). The LSTM is unidirectional, so outputs at valid steps ignore the padding.
        h, _ = self.lstm(e)  # (B, T, H)
        attn = self.self_attn(h, valid_mask(lengths, h.shape[1]))  # (B, r, T)
        pooled = attn @ h  # (B, r, H)
        return self.output_layer(pooled).squeeze(-1)  # (B, r)
