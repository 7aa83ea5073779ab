"""Checkpoints: the typed fields of a network with everything needed to use it and say where it came from, the
one file format they are saved in, and loading (this project's formats and the paper's raw state_dicts) without
executing code, refusing anything inconsistent in one line."""
from __future__ import annotations

import hashlib
import io
import math
import re
import subprocess
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from dataset import SPLITS, Normalization, Scaler, SplitRecord, TrainingRange
from errors import DataError
from featurizers import GATED_PATHS, LINEAR_PATHS
from model import ModelConfig, build_model, paper_config
from openface import FEATURE_COLUMNS, FEATURE_SETS, TRAITS, Clip, feature_set_name
from tables import atomic_output

__version__ = "3.6.0"
CHECKPOINT_FORMAT = "openface-bigfive/3"  # typed fields; one set of linear paths beside the members' branches
FORMAT_2 = "openface-bigfive/2"  # typed fields; every member of an ensemble held its own copy of the linear paths
FORMAT_1 = "openface-bigfive/1"  # metadata in an untyped dict; the first HybridNet
FORMAT_1_ARCHITECTURE: dict[str, object] = {  # what format-1 configs leave out: the first HybridNet's parts
    **{path.enabled_by: False for path in LINEAR_PATHS}, "members": 1,
    "conv_residual": False, "conv_pool": "mean", "squeeze_excite": True}
FORMAT_3_DEFAULTS: dict[str, object] = {  # what format 3 from earlier code leaves out: the paths added since 3.0.0,
    # gated paths fitted on what the statistics path misses (before 3.3.0), a temporal path of the inputs alone
    # (before 3.5.0) and of their lagged correlations alone (before 3.6.0)
    "curves_path": False, "kernel_path": False, "interval_path": False, "paths_with_statistics": False,
    "temporal_differences": False, "temporal_sizes": False, "temporal_co_moments": False}
FORMAT_2_DEFAULTS: dict[str, object] = {"event_path": False, "shape_path": False, **FORMAT_3_DEFAULTS}
FIRST_COUNTED_EVENTS = (2, 0, 1)  # the code version from which the event path counts its inputs as this code does
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
    if payload.get("format") in (CHECKPOINT_FORMAT, FORMAT_2, FORMAT_1):
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
    version = payload.get("format")
    try:
        cfg = ModelConfig(**saved_config(version, dict(payload["config"])))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"bad model config: {err}") from None
    try:
        fields = _fields_from_v1(payload["meta"]) if version == FORMAT_1 else payload["fields"]
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
    if version != CHECKPOINT_FORMAT and cfg.event_path and code_release(ckpt.code_version) < FIRST_COUNTED_EVENTS:
        raise CheckpointError(path, f"its event path is the first one (code {ckpt.code_version or 'unrecorded'}), "
                                    "whose inputs this code counts differently: retrain it")
    if version != CHECKPOINT_FORMAT and cfg.kind != "paper":
        state = state_in_members(path, state, cfg)
    _load_state(path, model, state)
    return ckpt


def saved_config(version: str, record: dict) -> dict:
    """The ModelConfig fields of a checkpoint's config record, with what its format leaves out filled in."""
    if version == FORMAT_1:
        return {**FORMAT_1_ARCHITECTURE, "conv_dilations": (1,) * len(record["conv_kernels"]), **record}
    return {**(FORMAT_2_DEFAULTS if version == FORMAT_2 else FORMAT_3_DEFAULTS), **record}


def code_release(version: str) -> tuple[int, ...]:
    """(2, 0, 1) for '2.0.1+81eec06'; () when no release number is recorded (older than any)."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(map(int, match.groups())) if match else ()


LINEAR_KEYS = {path.key for path in LINEAR_PATHS}
BUFFER_KEYS = {name for path in GATED_PATHS for name in (path.gates, path.fill, path.knots, path.levels)
               if name} | {"gates"}


def state_in_members(path: Path, state: dict, cfg: ModelConfig) -> dict:
    """A HybridNet state_dict of formats 1 and 2 in this format's layout: the branches under members.K (a single
    network's at the top level became members.0), and one set of linear paths and gates at the top level (an
    ensemble held identical copies in every member, refused if they differ); 'gates' is now 'branch_gates'."""
    out: dict = {}
    for key, value in state.items():
        key = str(key)
        in_member = cfg.members > 1 and key.startswith("members.") and key.count(".") >= 2
        inner = key.split(".", 2)[2] if in_member else key  # the name inside one member of an ensemble
        if inner.split(".")[0] not in LINEAR_KEYS and inner not in BUFFER_KEYS:
            out[key if cfg.members > 1 else f"members.0.{key}"] = value
            continue
        shared = "branch_gates" if inner == "gates" else inner
        if shared in out and not torch.equal(out[shared], value):
            raise CheckpointError(path, f"the members of its ensemble hold different {inner}; this code's "
                                        "ensembles share one set of linear paths")
        out[shared] = value
    return out


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
