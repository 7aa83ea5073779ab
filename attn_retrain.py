"""Retrain a checkpoint (ours, or the paper's au_180.pt / 3iternorm_180.pt) with updated annotations.

    python attn_retrain.py data/synthetic/frames.csv --weights weights/hybrid.pt \\
        --labels new_labels.csv -o weights/hybrid_retrained.pt
    python attn_retrain.py study_frames.csv --weights weights/au_180.pt --labels study_labels.csv \\
        --freeze attention -o weights/au_retrained.pt

New labels override the old ones for the clips they name; clips left without any label are reported and not
used. The features, normalisation and (when recorded) the split come from the checkpoint. Metrics on the
held-out test split, on the new labels, are printed before and after and saved to NAME.retrain.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli import add_device_arg, add_reading_args, distributed_session, reading_options, report_user_errors
from dataset import Scaler, default_split_path, save_split
from model import load_checkpoint, save_checkpoint
from openface import DataError, attach_labels, read_clips, read_labels
from training import SplitData, TrainOptions, fit, held_out_report, split_data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="combined frame table(s) and/or OpenFace CSV files or folders")
    parser.add_argument("--weights", type=Path, required=True, help="checkpoint to start from")
    parser.add_argument("-o", "--output", type=Path, required=True, help="retrained best checkpoint to write")
    parser.add_argument("--split", type=Path, default=None,
                        help="split file, used when the checkpoint records none (default: DATA.split.csv)")
    parser.add_argument("--freeze", choices=("conv", "attention"), default=None, help="keep one branch fixed")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4, lower than training)")
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", action="store_true")
    add_device_arg(parser)
    add_reading_args(parser)
    return parser


def retrain_split(ckpt_meta: dict, clips: list, args: argparse.Namespace) -> SplitData:
    """The checkpoint's recorded split when it has one (so held-out clips stay held out), else a split file."""
    recorded = ckpt_meta.get("split")
    if recorded is None:
        return split_data(clips, args.split or default_split_path(args.data[0]), args.seed)
    path = args.split or Path(recorded["path"])
    if not path.exists():
        save_split(path, recorded["assignment"])
    return split_data(clips, path, args.seed)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with distributed_session(args.device) as (device, world):
        ckpt = load_checkpoint(args.weights, device)
        features = ckpt.features
        try:
            clips, summary = read_clips(args.data, features, **reading_options(args))
        except DataError as err:
            raise DataError(err.path, f"{err.reason} -- checkpoint {args.weights} needs {len(features)} features: "
                                      f"{', '.join(features)}") from None
        labels = read_labels(args.labels) if args.labels else None
        attach_labels(clips, labels, ", ".join(args.labels or args.data), require=False)
        unlabelled = [c.clip_id for c in clips if c.label is None]
        clips = [c for c in clips if c.label is not None]
        if not clips:
            raise DataError(", ".join(args.data), "no clip has a label; pass --labels")
        split = retrain_split(ckpt.meta, clips, args)
        scaler = Scaler.from_dict(ckpt.meta.get("normalization", {}), len(features))
        model = ckpt.model
        test = split.parts["test"] or split.parts["val"]
        test_name = "test" if split.parts["test"] else "validation"
        before_loss, before, before_text = held_out_report(model, test, scaler, device, f"before retraining ({test_name})")
        if world.is_main:
            print(summary.render())
            if unlabelled:
                print(f"{len(unlabelled)} clip(s) have no label and are not used, e.g. {', '.join(unlabelled[:5])}")
            print(split.describe())
            print(before_text)
        opts = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, patience=args.patience, seed=args.seed,
                            augment=args.augment, freeze=args.freeze)
        meta = {**{k: v for k, v in ckpt.meta.items() if k not in ("metrics", "split", "source")},
                "features": features, "model_kind": ckpt.config.kind, "retrained_from": str(args.weights)}
        fit(model, split, scaler, opts, args.output, meta, device, world)
        best = load_checkpoint(args.output, device)
        after_loss, after, after_text = held_out_report(best.model, test, scaler, device, f"after retraining ({test_name})")
        if world.is_main:
            print(after_text)
            change = {"split": test_name, "clips": len(test), "mse_before": before_loss, "mse_after": after_loss,
                      "before": before.to_dict(orient="index"), "after": after.to_dict(orient="index")}
            save_checkpoint(args.output, best.model, {**best.meta, "retrain": change})
            report = args.output.with_suffix("").with_name(args.output.stem + ".retrain.json")
            report.write_text(json.dumps(change, indent=2) + "\n")
            print(f"held-out MSE on the new labels: {before_loss:.5f} -> {after_loss:.5f}; wrote {args.output} and {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
