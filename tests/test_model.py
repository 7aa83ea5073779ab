"""The networks (model.py, paper_net.py) and checkpoints (checkpoint.py): shapes, padding invariance, the paper
network against an independent reference, the checkpoint formats and their refusals."""
from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoint import (PAPER_FEATURE_SETS, Checkpoint, CheckpointError, __version__, check_features, load_checkpoint,
                        save_checkpoint)
from conftest import ROOT
from dataset import Normalization, SplitRecord
from errors import DataError
from featurizers import (SHAPE_LAGS, SHAPE_QUANTILES, SHAPE_SEGMENTS, SHAPE_STATISTICS, clip_moments,
                         clip_shapes, event_timings)
from model import PRESETS, ModelConfig, build_model, paper_config
from openface import FEATURE_COLUMNS, FEATURE_SETS, TRAITS
from paper_net import PaperNet


SMALL = dict(embed_dim=32, lstm_hidden=16, attn_dim=24, attn_hops=4)


def sensitive(model: torch.nn.Module) -> torch.nn.Module:
    """Larger random weights than the default init, so outputs visibly depend on the input."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.08)
    return model.eval()


def unclipped(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The output before the eval-mode clipping to [0, 1] (which could hide differences)."""
    if not model.cfg.stats_path:
        return model(x, lengths)
    x = x.masked_fill(torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None], 0.0)
    return model.linear(x, lengths) + model.branch_gates * model.contributions(x, lengths, paths=())["branches"]


@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
@pytest.mark.parametrize("kind", ["hybrid", "conv", "attention"])
def test_output_shapes_for_every_feature_set_and_variant(feature_set, kind):
    n = len(FEATURE_SETS[feature_set])
    model = build_model(ModelConfig(kind=kind, n_features=n, **SMALL)).eval()
    out = model(torch.randn(3, 57, n), torch.tensor([57, 41, 10]))
    assert out.shape == (3, 5) and ((out >= 0) & (out <= 1)).all()


@pytest.mark.parametrize("kind", ["hybrid", "conv", "attention"])
def test_padding_and_garbage_beyond_length_do_not_change_outputs(kind):
    torch.manual_seed(0)
    model = sensitive(build_model(ModelConfig(kind=kind, n_features=22, **SMALL)))
    lengths = [80, 45, 120, 3]
    clips = [torch.randn(n, 22) for n in lengths]
    with torch.no_grad():
        alone = torch.cat([unclipped(model, c[None], torch.tensor([len(c)])) for c in clips])
        batch = torch.full((4, 150, 22), float("nan"))  # garbage, even NaN, beyond each length
        for i, c in enumerate(clips):
            batch[i, : len(c)] = c
        batched = unclipped(model, batch, torch.tensor(lengths))
    torch.testing.assert_close(batched, alone, atol=2e-6, rtol=0)
    assert (alone[:, None] - alone[None]).abs().max() > 1e-4  # clips differ by 50x the tolerance


def test_event_timings_are_the_frames_from_the_last_peak_of_one_input_to_the_peaks_of_another_and_their_share():
    n = len(FEATURE_COLUMNS)
    pitch, lid, smile = (FEATURE_COLUMNS.index(name) for name in ("pose_Rx", "AU05_r", "AU12_r"))
    x = torch.zeros(1, 300, n)
    x[0, [5, 30], pitch] = -1.0  # two nods (dips)
    x[0, [12, 40, 220], lid] = 1.0  # the first two answered 7 and 10 frames later; the third too late to count
    x[0, 50, smile] = 1.0  # one smile, after both
    latency, share = event_timings(x, torch.tensor([300])).view(2, 2 * n, n)  # (rises then dips of i, rises of j)
    assert latency[n + pitch, lid] == 8.5 and share[n + pitch, lid] == 2 / 3  # 220 is > EVENT_CAP after a nod
    assert latency[n + pitch, smile] == 20 and share[n + pitch, smile] == 1  # 50 - 30
    assert latency[lid, lid] == 0 and latency[lid, smile] == 10  # a peak is its own last event
    assert latency[smile, lid] == 170 and share[smile, lid] == 1 / 3  # only the lid raise at 220 follows the smile
    assert latency[n + pitch, pitch].isnan() and share[n + pitch, pitch].isnan()  # pitch never rises
    x[0, :, lid] = 0.0
    x[0, 260, lid] = 1.0  # now every lid raise comes too late after a nod
    latency, share = event_timings(x, torch.tensor([300])).view(2, 2 * n, n)
    assert latency[n + pitch, lid].isnan() and share[n + pitch, lid] == 0
    x[0, :, smile] = torch.linspace(0, 1, 300)  # a slow rise is no event: its highest frame is 1.7 sd up
    assert event_timings(x, torch.tensor([300])).view(2, 2 * n, n)[:, n + pitch, smile].isnan().all()


def test_event_timings_ignore_what_lies_beyond_each_clip():
    torch.manual_seed(0)
    lengths = [80, 45, 120]
    clips = [torch.randn(length, 22) for length in lengths]
    alone = torch.cat([event_timings(c[None], torch.tensor([len(c)])) for c in clips])
    batch = torch.zeros(3, 150, 22)  # zeros beyond each length, as HybridNet.contributions gives them
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    torch.testing.assert_close(event_timings(batch, torch.tensor(lengths)), alone, atol=0, rtol=0, equal_nan=True)
    assert (~alone.isnan()).float().mean() > 0.05  # real timings, not only missing ones


def test_clip_shapes_ignore_what_lies_beyond_each_clip():
    torch.manual_seed(0)
    lengths = [80, 45, 120, 2]
    clips = [torch.randn(length, 22) for length in lengths]
    alone = torch.cat([clip_shapes(c[None], torch.tensor([len(c)])) for c in clips])
    batch = torch.zeros(4, 150, 22)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    torch.testing.assert_close(clip_shapes(batch, torch.tensor(lengths)), alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(alone).all()


def test_clip_shapes_read_what_a_clip_mean_and_std_cannot():
    """At one mean and spread: a rough input against a smooth one, a drift up against a drift down, a fast
    oscillation against a slow one; each differs in its own statistic, the clip moments do not."""
    t = torch.arange(600.0)
    smooth = torch.sin(2 * math.pi * t / 200)
    pairs = {"rough": (torch.sign(torch.sin(2 * math.pi * t / 4)), smooth),
             "drift": (torch.linspace(-1, 1, 600), -torch.linspace(-1, 1, 600)),
             "fast": (torch.sin(2 * math.pi * t / 20), smooth)}
    names = ["mean²", "std²", *(f"q{q}" for q in SHAPE_QUANTILES), "rough1", "rough2",
             *(f"auto{lag}" for lag in SHAPE_LAGS), "crossings", "run", "spikes", "drift",
             *(f"segment{k}" for k in range(SHAPE_SEGMENTS))]
    assert len(names) == SHAPE_STATISTICS
    for name, (a, b) in pairs.items():
        x = torch.stack([a, b])[:, :, None].expand(-1, -1, 22).contiguous()
        x = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True)  # the same mean and spread
        shapes = dict(zip(names, clip_shapes(x, torch.tensor([600, 600])).view(2, SHAPE_STATISTICS, 22)[:, :, 0].T))
        moments = clip_moments(x, torch.tensor([600, 600]))
        torch.testing.assert_close(moments[0], moments[1], atol=1e-4, rtol=0)
        differs = {"rough": ("rough1", "auto1", "crossings"), "drift": ("drift", "segment0", "segment3"),
                   "fast": ("auto8", "crossings", "run")}[name]
        for statistic in differs:
            first, second = (float(v) for v in shapes[statistic])
            assert abs(first - second) > 0.4 * max(abs(first), abs(second)) > 0.01, (name, statistic, first, second)


def test_attention_branch_depends_on_the_clip():
    """The published wiring error (one branch output for every clip) is not in the hybrid network."""
    torch.manual_seed(1)
    model = build_model(ModelConfig(kind="attention", n_features=17, **SMALL)).eval()
    seen = []
    model.members[0].head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.no_grad():
        model(torch.randn(5, 100, 17), torch.full((5,), 100))
    branch = seen[0]  # (B, hops)
    assert branch.shape == (5, 4) and (branch.std(dim=0) > 1e-3).all()


# ----------------------------------------------------------------------------------------------------------
# The paper network against an independent one-clip reference written from docs/paper.md


def reference_paper_forward(sd: dict, x: np.ndarray) -> np.ndarray:
    """docs/paper.md, the forward pass, steps 1-4, one clip at a time, in float32 like the original, plain tensor algebra."""
    dtype = torch.float32
    w = {k: v.to(dtype) for k, v in sd.items()}
    length, n_feat = x.shape
    padded = torch.zeros(700, n_feat, dtype=dtype)
    padded[:length] = torch.from_numpy(x).to(dtype)
    k = torch.arange(256, dtype=dtype)
    omega = torch.exp(-math.log(10000) * k / 256)
    tau = torch.arange(700, dtype=dtype) * 100 / 30
    s = torch.cat([torch.cos(tau[:, None] * omega), torch.sin(tau[:, None] * omega)], dim=1)
    hidden = s @ w["time_embed.0.weight"].T + w["time_embed.0.bias"]
    mlp = (hidden * torch.sigmoid(hidden)) @ w["time_embed.2.weight"].T + w["time_embed.2.bias"]
    e = padded @ w["au_emb.weight"].T + w["au_emb.bias"] + mlp
    gates = w["attention_lstm.lstm.weight_ih_l0"] @ e[699] + w["attention_lstm.lstm.bias_ih_l0"] + \
        w["attention_lstm.lstm.bias_hh_l0"]
    i, f, g, o = gates.chunk(4)
    cell = torch.sigmoid(i) * torch.tanh(g)
    z = torch.sigmoid(o) * torch.tanh(cell)
    c = (w["attention_lstm.output_layer.weight"] @ z + w["attention_lstm.output_layer.bias"]).item()

    def se(v, name):
        pooled = v.mean(dim=1)
        scale = torch.sigmoid(w[f"{name}.fc2.weight"] @ torch.relu(w[f"{name}.fc1.weight"] @ pooled +
                                                                     w[f"{name}.fc1.bias"]) + w[f"{name}.fc2.bias"])
        return v * scale[:, None]

    v = padded.T[None]  # (1, F, 700)
    for layer, pad in ((1, 4), (2, 2), (3, 1), (4, 1)):
        v = torch.relu(F.conv1d(v, w[f"conv1d_y{layer}.weight"], w[f"conv1d_y{layer}.bias"], padding=pad))
        v = se(v[0], f"squeeze_excite{layer}")[None]
    assert v.shape[2] == 701
    y = v[0].mean(dim=1)
    h = torch.cat([torch.full((256,), c, dtype=dtype), y])
    for j in range(3):
        h = w[f"linear_layer_stack.{j}.weight"] @ h + w[f"linear_layer_stack.{j}.bias"]
    return torch.sigmoid(h).numpy()


def random_paper_state(n_features: int, seed: int) -> dict:
    torch.manual_seed(seed)
    sd = PaperNet(paper_config(n_features)).state_dict()
    return {k: (torch.randn_like(v) * 0.08 if v.is_floating_point() else v) for k, v in sd.items()}


@pytest.mark.parametrize("n_features", [17, 22])
def test_paper_network_matches_reference_within_1e6(n_features):
    sd = random_paper_state(n_features, seed=n_features)
    model = PaperNet(paper_config(n_features))
    model.load_state_dict(sd, strict=True)
    model.eval()
    rng = np.random.default_rng(0)
    lengths = [41, 97, 450, 699]
    clips = [rng.uniform(0, 2, (n, n_features)).astype(np.float32) for n in lengths]
    batch = torch.zeros(len(clips), 699, n_features)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = torch.from_numpy(c)
    with torch.no_grad():
        out = model(batch, torch.tensor(lengths)).numpy()
    expected = np.stack([reference_paper_forward(sd, c) for c in clips])
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)
    assert out.std(axis=0).max() > 1e-3


def test_paper_constant_branch_evaluated_once_per_call():
    model = PaperNet(paper_config(17)).eval()
    calls = []
    model.attention_lstm.lstm.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.randn(6, 200, 17), torch.full((6,), 200))
    assert len(calls) == 1


def test_paper_network_long_clips_average_windows():
    torch.manual_seed(0)
    model = PaperNet(paper_config(17)).eval()
    x = torch.randn(1, 1500, 17)
    with torch.no_grad():
        out = model(x, torch.tensor([1500]))
        windows = [x[:, 0:500], x[:, 500:1000], x[:, 1000:1500]]
        manual = torch.stack([model(w, torch.tensor([500])) for w in windows]).mean(dim=0)
    torch.testing.assert_close(out, manual, atol=1e-6, rtol=0)


def test_paper_network_trains_with_dropout():
    model = PaperNet(paper_config(17)).train()
    x = torch.randn(2, 100, 17)
    torch.manual_seed(0)
    a = model(x, torch.tensor([100, 100]))
    torch.manual_seed(1)
    b = model(x, torch.tensor([100, 100]))
    assert not torch.equal(a, b)
    a.sum().backward()
    assert model.conv1d_y1.weight.grad is not None


# ----------------------------------------------------------------------------------------------------------
# Checkpoints


def test_save_load_round_trip_reproduces_outputs_and_fields_exactly(tmp_path):
    """Every linear path in use, its weights and its buffers (gates, fills, knots, levels) away from their
    initial values, so what a fitted network keeps is what comes back."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind="hybrid", n_features=17, **SMALL)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for buffer in model.buffers():
            buffer.uniform_(0.2, 1.0)
        for path in cfg.linear_paths:
            getattr(model, path.key).weight.normal_(0, 0.01)
    split = SplitRecord("s.csv", "ab" * 32, {"v1": "train", "v2": "test"})
    norm = Normalization("standard", tuple(range(17)), tuple([2.0] * 17))
    save_checkpoint(tmp_path / "m.pt", Checkpoint(model, cfg, FEATURE_SETS["au"], normalization=norm, split=split,
                                                  seed=3, train_options={"epochs": 4}))
    assert not list(tmp_path.glob("*.tmp"))
    ckpt = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(2, 60, 17)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([60, 30])), ckpt.model(x, torch.tensor([60, 30])))
    assert ckpt.config == cfg and ckpt.features == FEATURE_SETS["au"] and ckpt.traits == TRAITS
    assert ckpt.normalization == norm and ckpt.split == split and ckpt.seed == 3 and ckpt.source == "ours"
    assert ckpt.code_version.startswith(__version__) and ckpt.train_options == {"epochs": 4}


LEGACY = ROOT / "tests" / "fixtures" / "checkpoints"  # written by earlier code (README.md there)


def legacy_outputs(name: str) -> torch.Tensor:
    """The outputs code 2.0.1 gave on its fixed inputs for one of the fixture checkpoints."""
    return torch.tensor(json.loads((LEGACY / "expected_outputs.json").read_text())["outputs"][name])


def legacy_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(3, 40, 22, generator=torch.Generator().manual_seed(0)), torch.tensor([40, 31, 12])


@pytest.mark.parametrize("file,name", [("format1_hybrid", "format1"), ("format2_before_events", "before_events"),
                                       ("format2_hybrid", "hybrid"), ("format2_ensemble", "ensemble"),
                                       ("format2_ensemble_no_stats", "ensemble_no_stats"),
                                       ("format3_all_paths", "format3")])
def test_checkpoints_of_earlier_formats_give_the_outputs_they_gave(file, name):
    """An ensemble's members each held a copy of the linear paths; they load into the one set this format has. The
    outputs match to float32 rounding (1e-6): the last bit of a matrix product differs between CPUs."""
    ckpt = load_checkpoint(LEGACY / f"{file}.pt")
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(*legacy_inputs()), legacy_outputs(name), rtol=0, atol=1e-6)


def test_first_format_fields_and_defaults_are_read():
    ckpt = load_checkpoint(LEGACY / "format1_hybrid.pt")
    assert ckpt.normalization == Normalization("standard", (0.5,) * 22, (2.0,) * 22)
    assert ckpt.split.assignment == {"a": "train"} and ckpt.code_version == "1.0.0+abc"
    assert ckpt.config.squeeze_excite and not ckpt.config.stats_path and ckpt.config.conv_dilations == (1, 1)


def test_a_second_format_checkpoint_from_before_the_event_path_has_it_off():
    ckpt = load_checkpoint(LEGACY / "format2_before_events.pt")
    assert ckpt.config.temporal_path and not ckpt.config.event_path and not hasattr(ckpt.model, "events")


def test_checkpoints_with_the_first_event_path_are_refused_in_one_line():
    """Code before 2.0.1 counted the event path's inputs otherwise (every rise, the cap for a missing latency)."""
    with pytest.raises(CheckpointError, match=r"format2_first_events.pt: its event path is the first one \(code "
                                              r"2.0.0\+81eec06\), whose inputs this code counts differently: retrain it"):
        load_checkpoint(LEGACY / "format2_first_events.pt")


def test_an_ensemble_whose_members_hold_different_linear_paths_is_refused(tmp_path):
    payload = torch.load(LEGACY / "format2_ensemble.pt", weights_only=True)
    payload["state_dict"]["members.2.stats.bias"] = payload["state_dict"]["members.2.stats.bias"] + 1
    torch.save(payload, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="odd.pt: the members of its ensemble hold different stats.bias"):
        load_checkpoint(tmp_path / "odd.pt")


def test_inconsistent_checkpoints_are_refused(tmp_path):
    cfg = ModelConfig(kind="conv", n_features=17, **SMALL)
    model = build_model(cfg)

    def saved(**fields):
        path = tmp_path / "c.pt"
        save_checkpoint(path, Checkpoint(model, cfg, FEATURE_SETS["au"], normalization=Normalization("none")))
        payload = torch.load(path, weights_only=True)
        payload["fields"].update(fields)
        torch.save(payload, path)
        return path

    with pytest.raises(CheckpointError, match="lists 22 features for a network with 17 inputs"):
        load_checkpoint(saved(features=list(FEATURE_SETS["all"])))
    with pytest.raises(CheckpointError, match="normalisation has 3 offsets and 3 scales for 17 features"):
        load_checkpoint(saved(normalization={"kind": "standard", "offset": [0, 0, 0], "scale": [1, 1, 1]}))
    with pytest.raises(CheckpointError, match="not a set of OpenFace feature columns \\(p_rx\\)"):
        load_checkpoint(saved(features=list(FEATURE_SETS["au"][:16]) + ["p_rx"]))
    with pytest.raises(CheckpointError, match="the split assignment must map source videos"):
        load_checkpoint(saved(split={"path": "/home/x/.bashrc", "sha256": "0", "assignment": {"a": "touch X #"}}))
    with pytest.raises(CheckpointError, match="unknown normalization kind 'exec'"):
        load_checkpoint(saved(normalization={"kind": "exec"}))


@pytest.mark.parametrize("n_features,feature_set", [(17, "au"), (22, "all")])
def test_paper_raw_state_dict_loads_with_named_features(tmp_path, n_features, feature_set):
    sd = random_paper_state(n_features, 3)
    torch.save(sd, tmp_path / "paper.pt")
    ckpt = load_checkpoint(tmp_path / "paper.pt")
    assert ckpt.source == "paper" and ckpt.features == FEATURE_SETS[PAPER_FEATURE_SETS[n_features]]
    assert ckpt.features == FEATURE_SETS[feature_set] and ckpt.normalization.kind == "paper"
    assert isinstance(ckpt.model, PaperNet) and not ckpt.model.training


def test_bad_checkpoints_have_clear_messages(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")
    sd = random_paper_state(17, 0)
    torch.save(sd, tmp_path / "good.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="trunc.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt: not a PyTorch checkpoint file"):
        load_checkpoint(tmp_path / "text.pt")
    (tmp_path / "image.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(CheckpointError, match="image.pt: not a PyTorch checkpoint file"):
        load_checkpoint(tmp_path / "image.pt")
    missing = dict(sd)
    missing.pop("bn1.running_mean")
    missing["extra.weight"] = torch.zeros(1)
    torch.save(missing, tmp_path / "keys.pt")
    with pytest.raises(CheckpointError, match="missing keys bn1.running_mean; unknown keys extra.weight"):
        load_checkpoint(tmp_path / "keys.pt")
    wrong = dict(sd)
    wrong["linear_layer_stack.2.weight"] = torch.zeros(4, 128)
    torch.save(wrong, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"shapes match no known network: linear_layer_stack.2.weight is \(4, 128\)"):
        load_checkpoint(tmp_path / "shape.pt")
    nan = dict(sd)
    nan["conv1d_y2.bias"] = torch.full((256,), float("nan"))
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="conv1d_y2.bias holds NaN or infinite weights"):
        load_checkpoint(tmp_path / "nan.pt")
    odd = {k: v for k, v in random_paper_state(17, 0).items()}
    odd["conv1d_y1.weight"] = torch.zeros(128, 9, 8)
    torch.save(odd, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="9 input features: the published networks have 17 or 22"):
        load_checkpoint(tmp_path / "odd.pt")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="not a known checkpoint"):
        load_checkpoint(tmp_path / "dict.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="refused: the file holds Python objects"):
        load_checkpoint(tmp_path / "module.pt")


def test_model_config_refuses_impossible_sizes():
    with pytest.raises(DataError, match="conv width 8 is below the squeeze-excite reduction 16"):
        ModelConfig(conv_channels=(8,) * 5, squeeze_excite=True)
    ModelConfig(conv_channels=(8,) * 5)  # no squeeze-excite, no limit
    with pytest.raises(DataError, match="3 conv widths, 5 kernel widths and 5 dilations"):
        ModelConfig(conv_channels=(32, 32, 32))
    assert ModelConfig().receptive_field == 125 and PRESETS["paper"].receptive_field == 16
    with pytest.raises(DataError, match="the paper's network has fixed sizes; drop the flags for embed_dim"):
        ModelConfig(kind="paper", embed_dim=64)
    with pytest.raises(DataError, match="the temporal path, the event path, the shape path, the curves path, the "
                                        r"kernel path and the interval path need the statistics path \(add "
                                        r"--no-temporal-path --no-event-path --no-shape-path --no-curves-path "
                                        r"--no-kernel-path --no-interval-path, or drop --no-stats-path\)"):
        ModelConfig(stats_path=False)
    with pytest.raises(DataError, match="the event path needs the statistics path"):
        ModelConfig(stats_path=False, temporal_path=False, shape_path=False, curves_path=False, kernel_path=False,
                    interval_path=False)


def test_feature_mismatch_names_columns(tmp_path):
    torch.save(random_paper_state(22, 0), tmp_path / "p22.pt")
    ckpt = load_checkpoint(tmp_path / "p22.pt")
    with pytest.raises(CheckpointError, match="expects feature set all; the data lacks gaze_angle_x, gaze_angle_y, "
                                              "pose_Rx, pose_Ry, pose_Rz"):
        check_features(ckpt, list(FEATURE_SETS["au"]), "data.csv")
    check_features(ckpt, list(FEATURE_SETS["all"]), "data.csv")


def test_a_checkpoint_carries_the_sha256_of_the_bytes_it_was_loaded_from(tmp_path):
    torch.save(random_paper_state(17, 0), tmp_path / "a.pt")
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert ckpt.sha256 == hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()


def test_weights_that_are_not_floating_point_are_refused_and_other_float_widths_cast(tmp_path):
    state = random_paper_state(17, 0)
    torch.save({k: v.to(torch.int64) if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "int.pt")
    with pytest.raises(CheckpointError, match=r"int.pt: \S+ holds int64 values where the network has float32"):
        load_checkpoint(tmp_path / "int.pt")
    torch.save(state, tmp_path / "f32.pt")
    torch.save({k: v.double() if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "f64.pt")
    x, lengths = torch.randn(2, 80, 17), torch.tensor([80, 50])
    with torch.no_grad():
        expected = load_checkpoint(tmp_path / "f32.pt").model(x, lengths)
        torch.testing.assert_close(load_checkpoint(tmp_path / "f64.pt").model(x, lengths), expected)


def test_a_compressed_archive_is_refused_before_it_is_unpacked(tmp_path):
    """A 256 MiB zero record deflated into a few bytes: refused by name, at the cost of reading the file."""
    state = random_paper_state(17, 0)
    torch.save(state, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as plain, \
            zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as bomb:
        for record in plain.infolist():
            bomb.writestr(record.filename, plain.read(record.filename))
        bomb.writestr("archive/data/999", bytes(256 * 2**20))
    assert (tmp_path / "bomb.pt").stat().st_size < 16 * 2**20  # the weights themselves, plus a few bytes of zeros
    probe = ("import resource, sys; sys.path.insert(0, sys.argv[2]); from checkpoint import load_checkpoint\n"
             "try:\n    load_checkpoint(sys.argv[1])\nexcept Exception as err:\n    print(err)\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")

    def load_in_a_fresh_process(path: Path) -> tuple[list[str], int]:
        done = subprocess.run([sys.executable, "-c", probe, path, ROOT], capture_output=True, text=True, timeout=120)
        lines = done.stdout.strip().splitlines()
        return lines[:-1], int(lines[-1])

    message, peak_mb = load_in_a_fresh_process(tmp_path / "bomb.pt")
    assert message == [f"{tmp_path / 'bomb.pt'}: holds compressed records, which torch.save never writes "
                       "(archive/data/999 would unpack to 256 MiB); refusing to unpack it"]
    loaded, plain_mb = load_in_a_fresh_process(tmp_path / "plain.pt")
    assert loaded == [] and peak_mb < plain_mb + 64, (peak_mb, plain_mb)  # unpacking would add 256 MB


def test_a_checkpoint_of_a_newer_format_says_so(tmp_path):
    torch.save({"format": "openface-bigfive/4", "fields": {"code_version": "4.1.0"}, "config": {}}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"new.pt: written by a newer version of this code \(4.1.0, format "
                                              r"openface-bigfive/4\); update this repository"):
        load_checkpoint(tmp_path / "new.pt")
