"""Train a Big Five regressor on OpenFace features (alone, or under torchrun with DistributedDataParallel).

    python attn_regression.py data/synthetic/frames.csv -o weights/hybrid.pt
    python attn_regression.py data/synthetic/openface --labels data/synthetic/labels.csv --model conv -o weights/conv.pt
    torchrun --nproc_per_node=2 attn_regression.py data/synthetic/frames.csv -o weights/hybrid.pt

Writes the best checkpoint at -o, and beside it NAME.last.pt (for --resume), NAME.log.jsonl (one line per
epoch) and NAME.curve.png. The group split is read from --split, or created there when absent. Model sizes come
from --preset (default: sized for hundreds to thousands of clips; paper: the published sizes); a size flag
overrides the preset.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from cli import (Parser, add_device_option, add_labels_option, add_options, check_outputs, options_from, output_locks,
                 report_user_errors)
from dataset import Normalization, default_split_path, load_labelled_clips, split_data
from distributed import distributed_session, progress_printer
from model import PRESETS, ModelConfig, build_model
from openface import FEATURE_SETS, ReadOptions, feature_columns, input_files
from training import Run, RunOutputs, TrainOptions, fit

KEPT = "the checkpoints of the finished epochs are kept (NAME.pt, NAME.last.pt); run the same command with --resume"


def build_parser() -> Parser:
    parser = Parser(__doc__)
    parser.add_argument("data", nargs="+", help="combined frame table(s) and/or OpenFace CSV files or folders")
    parser.add_argument("-o", "--output", type=Path, required=True, help="best checkpoint to write, e.g. weights/hybrid.pt")
    parser.add_argument("--features", choices=list(FEATURE_SETS), default="all",
                        help="feature set: au (17), au_gaze (19), au_head (20), gaze_head (5), all (22)")
    add_labels_option(parser)
    parser.add_argument("--split", type=Path, default=None, help="split file (default: DATA.split.csv beside the data)")
    parser.add_argument("--resume", action="store_true", help="continue the same run from NAME.last.pt")
    add_device_option(parser)
    add_options(parser.add_argument_group("training"), TrainOptions, skip=("freeze",))
    model = parser.add_argument_group("model (a flag overrides --preset)")
    model.add_argument("--preset", choices=list(PRESETS), default="default",
                       help="architecture and sizes to start from (--model paper always uses the paper's)")
    add_options(model, ModelConfig, unset=True, default_note=preset_note)
    add_options(parser.add_argument_group("input"), ReadOptions)
    return parser


def preset_note(name: str) -> str:
    values = {preset: getattr(cfg, name) for preset, cfg in PRESETS.items()}
    shown = {k: " ".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in values.items()}
    return " (default from the preset: " + "; ".join(f"{k} {v}" for k, v in shown.items()) + ")"


@report_user_errors(kept=KEPT)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    features = feature_columns(args.features)
    outputs = RunOutputs.beside(args.output)
    split_path = args.split or default_split_path(args.data[0])
    read_paths = [f.path for f in input_files(args.data)] + [Path(p) for p in args.labels or []]
    check_outputs(outputs.all() + ([] if split_path.exists() else [split_path]),
                  read_paths + ([split_path] if split_path.exists() else []))
    preset = "paper" if args.kind == "paper" else args.preset  # the published network has only the published sizes
    config = options_from(args, ModelConfig, base=PRESETS[preset], n_features=len(features))
    options = options_from(args, TrainOptions)
    with distributed_session(args.device) as (device, world), output_locks([outputs.best] if world.is_main else []):
        clips, summary = load_labelled_clips(args.data, args.labels, features, options_from(args, ReadOptions))
        split = split_data(clips, split_path, options.seed)
        if world.is_main:
            print(summary.render())
            print(split.describe())
            if not args.resume or not outputs.last.exists():
                for stale in outputs.all():  # an earlier run's files must not sit beside this run's
                    stale.unlink(missing_ok=True)
        world.barrier()
        torch.manual_seed(options.seed)
        run = Run(build_model(config).to(device), config, tuple(features), split,
                  Normalization.fit("standard", split.parts["train"], features), options, outputs, device, world,
                  resume=args.resume, report=progress_printer(world))
        best = fit(run)
        if world.is_main:
            print(f"best epoch {best['epoch']}: validation MSE {best['val_loss']:.5f}, mean R2 {best['val_r2_mean']:+.3f}")
            print(f"wrote {outputs.best} (best), {outputs.last}, {outputs.log.name} and {outputs.curve.name}; "
                  f"evaluate with: python attn_test.py {' '.join(args.data)} --weights {outputs.best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
