"""Command-line plumbing shared by the scripts: input options, device choice, and user-error reporting."""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from openface import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_FRAMES, FEATURE_SETS, DataError


def report_user_errors(main):
    """Decorator for a script's main(): a DataError becomes one line on stderr and exit code 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

    return wrapper


def add_reading_args(parser: argparse.ArgumentParser, labels: bool = True) -> None:
    group = parser.add_argument_group("input")
    if labels:
        group.add_argument("--labels", nargs="+", default=None, metavar="FILE",
                           help="labels: CSV (File/clip_id + trait columns) or ChaLearn annotation .pkl; "
                                "they override trait columns of a combined table")
    group.add_argument("--face-id", type=int, default=0, help="face to use in multi-face OpenFace files (default 0)")
    group.add_argument("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                       help=f"drop frames with lower OpenFace confidence (default {DEFAULT_MIN_CONFIDENCE})")
    group.add_argument("--min-frames", type=int, default=DEFAULT_MIN_FRAMES,
                       help=f"skip clips with fewer usable frames (default {DEFAULT_MIN_FRAMES})")


def reading_options(args: argparse.Namespace) -> dict:
    return {"face_id": args.face_id, "min_confidence": args.min_confidence, "min_frames": args.min_frames}


def add_features_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", choices=list(FEATURE_SETS), default="all",
                        help="feature set: au (17), au_gaze (19), au_head (20), gaze_head (5), all (22)")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto picks CUDA when available (default auto)")


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise DataError(None, "--device cuda asked for, but no CUDA device is available")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def use_all_cores(processes: int = 1) -> int:
    """Share this machine's cores among `processes` local processes; returns the threads of this one."""
    threads = max(1, (os.cpu_count() or 1) // max(1, processes))
    torch.set_num_threads(threads)
    return threads


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def local_processes() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(device_choice: str) -> Iterator[tuple[torch.device, Distributed]]:
    """The device and process group of a script run alone or under torchrun; local ranks share the cores."""
    device = resolve_device(device_choice)
    world = init_distributed(device)
    try:
        if device.type == "cuda":
            device = resolve_device(device_choice, world.local_rank)
        use_all_cores(local_processes())
        yield device, world
    finally:
        shutdown_distributed()
