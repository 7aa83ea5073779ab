"""Train a Big Five regressor on OpenFace features (alone, or under torchrun with DistributedDataParallel).

    python attn_regression.py data/synthetic/frames.csv -o weights/hybrid.pt
    python attn_regression.py data/synthetic/openface --labels data/synthetic/labels.csv --model conv -o weights/conv.pt
    torchrun --nproc_per_node=2 attn_regression.py data/synthetic/frames.csv -o weights/hybrid.pt

Writes the best checkpoint at -o, and beside it NAME.last.pt (for --resume), NAME.log.jsonl (one line per
epoch) and NAME.curve.png. The group split is read from --split, or created there when absent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cli import (add_device_arg, add_features_arg, add_reading_args, distributed_session, reading_options,
                 report_user_errors)
from dataset import Scaler, default_split_path
from model import KINDS, ModelConfig, build_model
from openface import feature_columns
from training import TrainOptions, fit, load_labelled_clips, output_paths, split_data


def build_parser() -> argparse.ArgumentParser:
    defaults, model_defaults = TrainOptions(), ModelConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="combined frame table(s) and/or OpenFace CSV files or folders")
    parser.add_argument("-o", "--output", type=Path, required=True, help="best checkpoint to write, e.g. weights/hybrid.pt")
    add_features_arg(parser)
    parser.add_argument("--model", choices=KINDS, default="hybrid",
                        help="hybrid (default), conv or attention branch alone, or the paper's published network")
    parser.add_argument("--split", type=Path, default=None, help="split file (default: DATA.split.csv beside the data)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.lr, help="AdamW learning rate (cosine schedule)")
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    train.add_argument("--patience", type=int, default=defaults.patience,
                       help="stop after this many epochs without validation improvement")
    train.add_argument("--seed", type=int, default=defaults.seed, help="seeds the split, batches, init and dropout")
    train.add_argument("--augment", action="store_true", help="add the paper's augmentations to the training split")
    train.add_argument("--resume", action="store_true", help="continue from NAME.last.pt")
    add_device_arg(train)
    size = parser.add_argument_group("model size (defaults: the paper's)")
    size.add_argument("--embed-dim", type=int, default=model_defaults.embed_dim)
    size.add_argument("--lstm-hidden", type=int, default=model_defaults.lstm_hidden)
    size.add_argument("--attn-dim", type=int, default=model_defaults.attn_dim)
    size.add_argument("--attn-hops", type=int, default=model_defaults.attn_hops)
    size.add_argument("--conv-channels", type=int, nargs=4, default=list(model_defaults.conv_channels),
                      metavar="C", help="output channels of the four conv layers")
    size.add_argument("--dropout", type=float, default=model_defaults.dropout)
    add_reading_args(parser)
    return parser


def model_config(args: argparse.Namespace, n_features: int) -> ModelConfig:
    if args.model == "paper":
        return ModelConfig(kind="paper", n_features=n_features, dropout=args.dropout)
    return ModelConfig(kind=args.model, n_features=n_features, embed_dim=args.embed_dim, lstm_hidden=args.lstm_hidden,
                       attn_dim=args.attn_dim, attn_hops=args.attn_hops, conv_channels=tuple(args.conv_channels),
                       dropout=args.dropout)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with distributed_session(args.device) as (device, world):
        features = feature_columns(args.features)
        clips, summary = load_labelled_clips(args.data, args.labels, features, reading_options(args))
        split = split_data(clips, args.split or default_split_path(args.data[0]), args.seed)
        if world.is_main:
            print(summary.render())
            print(split.describe())
        torch.manual_seed(args.seed)
        cfg = model_config(args, len(features))
        model = build_model(cfg).to(device)
        scaler = Scaler.fit(split.parts["train"])
        opts = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                            patience=args.patience, seed=args.seed, augment=args.augment)
        meta = {"features": list(features), "model_kind": cfg.kind}
        best = fit(model, split, scaler, opts, args.output, meta, device, world, resume=args.resume)
        if world.is_main:
            print(f"best epoch {best['epoch']}: validation MSE {best['val_loss']:.5f}, mean R2 {best['val_r2_mean']:+.3f}")
            print(f"wrote {args.output} (best), {output_paths(args.output)['last']}, log and learning curve; "
                  f"evaluate with: python attn_test.py {' '.join(args.data)} --weights {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
