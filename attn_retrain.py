"""Retrain a checkpoint (ours, or the paper's au_180.pt / 3iternorm_180.pt) with updated annotations.

    python attn_retrain.py data/synthetic/frames.csv --weights weights/hybrid.pt \\
        --labels new_labels.csv -o weights/hybrid_retrained.pt
    python attn_retrain.py study_frames.csv --weights weights/au_180.pt --labels study_labels.csv \\
        --freeze attention -o weights/au_retrained.pt

New labels override the old ones for the clips they name; clips left without any label are reported and not
used. The features and normalisation come from the checkpoint; the paper's raw 22-input weights, which min-max
scale gaze and head pose over the data at hand, get that scaling fitted once on the training split and stored.
The split is --split, else the one recorded in the checkpoint (used as recorded, never written anywhere), else
DATA.split.csv beside the data. Held-out metrics on the new labels are printed before and after retraining and
saved to NAME.retrain.json and into the checkpoint.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from checkpoint import Checkpoint, input_scaler, load_checkpoint, save_checkpoint
from cli import (Parser, add_device_option, add_labels_option, add_options, check_outputs, options_from, output_locks,
                 report_user_errors)
from dataset import SplitData, default_split_path, split_data, split_from_record
from distributed import distributed_session, progress_printer
from errors import DataError
from openface import ReadOptions, attach_labels, input_files, read_clips, read_labels
from tables import json_safe, write_text_atomic
from training import RETRAIN_DEFAULTS, Run, RunOutputs, TrainOptions, fit, held_out_report

KEPT = "the checkpoints of the finished epochs are kept (NAME.pt, NAME.last.pt); run the same command to start again"


def build_parser() -> Parser:
    parser = Parser(__doc__)
    parser.add_argument("data", nargs="+", help="combined frame table(s) and/or OpenFace CSV files or folders")
    parser.add_argument("--weights", type=Path, required=True, help="checkpoint to start from")
    parser.add_argument("-o", "--output", type=Path, required=True, help="retrained best checkpoint to write")
    parser.add_argument("--split", type=Path, default=None,
                        help="split file (default: the checkpoint's recorded split, else DATA.split.csv)")
    add_labels_option(parser)
    add_device_option(parser)
    add_options(parser.add_argument_group("training (defaults for retraining)"), TrainOptions, defaults=RETRAIN_DEFAULTS)
    add_options(parser.add_argument_group("input"), ReadOptions)
    return parser


def report_path(output: Path) -> Path:
    return output.with_name(output.with_suffix("").name + ".retrain.json")


def retrain_split(ckpt: Checkpoint, clips: list, split_path: Path | None, data: str, seed: int) -> SplitData:
    """--split, else the checkpoint's recorded split (so held-out clips stay held out), else the file beside data."""
    if split_path is None and ckpt.split is not None:
        return split_from_record(clips, ckpt.split, f"the split recorded in {ckpt.split.path}")
    return split_data(clips, split_path or default_split_path(data), seed)


@report_user_errors(kept=KEPT)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outputs = RunOutputs.beside(args.output)
    ckpt = load_checkpoint(args.weights)
    split_path = args.split or (None if ckpt.split is not None else default_split_path(args.data[0]))
    new_split = split_path is not None and not split_path.exists()
    read_paths = [f.path for f in input_files(args.data)] + [Path(p) for p in args.labels or []] + [args.weights]
    check_outputs(outputs.all() + [report_path(args.output)] + ([split_path] if new_split else []),
                  read_paths + ([split_path] if split_path is not None and not new_split else []))
    options = options_from(args, TrainOptions)
    with distributed_session(args.device) as (device, world), \
            output_locks([args.output] if world.is_main else []):
        ckpt.model.to(device)
        features = list(ckpt.features)
        try:
            clips, summary = read_clips(args.data, features, options_from(args, ReadOptions))
        except DataError as err:
            raise DataError(err.path, f"{err.reason} -- checkpoint {args.weights} needs {len(features)} features: "
                                      f"{', '.join(features)}") from None
        labels = read_labels(args.labels) if args.labels else None
        attach_labels(clips, labels, ", ".join(args.labels or args.data), require=False)
        unlabelled = [c.clip_id for c in clips if c.label is None]
        clips = [c for c in clips if c.label is not None]
        if not clips:
            raise DataError(", ".join(args.data), "no clip has a label; pass --labels")
        split = retrain_split(ckpt, clips, split_path, args.data[0], options.seed)
        normalization = ckpt.normalization.fixed_on(split.parts["train"], features)
        run = Run(ckpt.model, ckpt.config, tuple(features), split, normalization, options, outputs, device, world,
                  retrained_from=str(args.weights), report=progress_printer(world))
        test = split.parts["test"] or split.parts["val"]
        test_name = "test" if split.parts["test"] else "validation"
        scaler = run.scaler
        before_loss, before, before_text = held_out_report(ckpt.model, test, scaler, device,
                                                           f"before retraining ({test_name})")
        if world.is_main:
            print(summary.render())
            if unlabelled:
                print(f"{len(unlabelled)} clip(s) have no label and are not used, e.g. {', '.join(unlabelled[:5])}")
            print(split.describe())
            print(before_text)
            for stale in outputs.all() + [report_path(args.output)]:
                stale.unlink(missing_ok=True)
        world.barrier()
        fit(run)
        if world.is_main:
            best = load_checkpoint(outputs.best, device)
            after_loss, after, after_text = held_out_report(best.model, test, input_scaler(best, test), device,
                                                            f"after retraining ({test_name})")
            print(after_text)
            best.retrain = {"split": test_name, "clips": len(test), "mse_before": before_loss, "mse_after": after_loss,
                            "before": before.to_dict(orient="index"), "after": after.to_dict(orient="index")}
            save_checkpoint(outputs.best, best)
            write_text_atomic(report_path(args.output),
                              json.dumps(json_safe(best.retrain), indent=2, allow_nan=False) + "\n")
            print(f"held-out MSE on the new labels: {before_loss:.5f} -> {after_loss:.5f}; wrote {outputs.best} and "
                  f"{report_path(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
