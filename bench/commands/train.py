"""``sbn-bench train``: train SBNs with gradient estimators and store per-epoch curves (resumable).

Order of work: build the configuration (defaults < recipe < flags), resolve the estimators, build
the data set and initial network and check every estimator against it — bad input stops here with
one line and nothing written — then open the store, find or create the run (its id derives from
the configuration's hash, so the same command resumes the same run), train each task not yet
done, committing each in its own transaction, and render the run's report (``--no-report`` skips it).
"""

from __future__ import annotations

import argparse
import os
import sys

from bench.rendering import DEFAULT_FORMATS, check_out_dir, check_report_flags, render
from bench.store import DEFAULT_DB
from bench.sweep import expand_estimators
from bench.training.loop import OPTIMIZERS
from bench.training.plan import checkpoint_file, prepare, run_training
from bench.training.recipes import RECIPES, TrainConfig
from bench.training.setups import build_train_problem
from estimators.errors import InputError
from estimators.inputs import int_list
from estimators.spec import split_list as split_estimators


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train SBNs with estimators; per-epoch loss/accuracy curves into the store")
    p.add_argument("--recipe", "--preset", dest="recipe", choices=sorted(RECIPES), default="small",
                   help="training recipe: data, network, estimators, schedule (default: small; --preset is the old spelling)")
    p.add_argument("--problem", metavar="SPEC", help="data set + network, e.g. shapes:widths=64-64, psa2d, cifar10-fc")
    p.add_argument("--estimator", action="append", metavar="SPEC",
                   help="estimator to train (repeatable or a comma list; * = all); replaces the recipe's")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float, help="learning rate (skips the search)")
    p.add_argument("--lr-search-trials", type=int, metavar="N", help="at most N trial runs in the learning-rate search")
    p.add_argument("--lr-search-epochs", type=int, metavar="E", help="epochs per trial run")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (Nesterov), momentum (heavy ball) or adam")
    p.add_argument("--batch", type=int)
    p.add_argument("--samples", "-k", type=int, help="sample paths per point for the loss and ensemble estimates")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="flip-and-crop augmentation of image data")
    p.add_argument("--crop-pad", type=int, metavar="PIXELS")
    p.add_argument("--checkpoint-epochs", metavar="E,E,...", help="save the network after these epochs (0 = initial)")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="default: sbn_checkpoints/train beside the database")
    p.add_argument("--checkpoint-points", type=int, metavar="N", help="training points stored with each checkpoint")
    p.add_argument("--seed", type=int, help="root seed (training streams; the problem spec fixes data and init)")
    p.add_argument("--device", help="cpu or cuda[:i]")
    p.add_argument("--dtype", choices=("float32", "float64"))
    p.add_argument("--cifar-dir", metavar="PATH", help="CIFAR-10 python version: directory or cifar-10-python.tar.gz")
    p.add_argument("--name", help="run name (default: the recipe's)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default: ./{DEFAULT_DB})")
    p.add_argument("--label", default="", help="free-text label stored with the run")
    p.add_argument("--no-report", action="store_true", help="skip the report")
    p.add_argument("--report-dir", metavar="DIR", help="where the report goes (default: sbn-report/RUN_ID)")
    p.add_argument("--format", default=DEFAULT_FORMATS, help="report formats (default: html,pdf)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    base = dict(RECIPES[args.recipe])
    if args.estimator:
        base["estimators"] = [e for text in args.estimator for e in split_estimators(text)]
    flags = dict(problem=args.problem, epochs=args.epochs, lr=args.lr, lr_search_trials=args.lr_search_trials,
                 lr_search_epochs=args.lr_search_epochs, optimizer=args.optimizer, batch=args.batch,
                 samples=args.samples, augment=args.augment, crop_pad=args.crop_pad, seed=args.seed,
                 device=args.device, dtype=args.dtype, name=args.name, checkpoint_points=args.checkpoint_points)
    base.update({k: v for k, v in flags.items() if v is not None})
    if args.checkpoint_epochs is not None:
        base["checkpoint_epochs"] = int_list(args.checkpoint_epochs, "--checkpoint-epochs")
    elif args.epochs is not None:  # a recipe's checkpoints past a shortened run are dropped, not an error
        base["checkpoint_epochs"] = tuple(e for e in base.get("checkpoint_epochs", ()) if e <= args.epochs)
    base["estimators"] = expand_estimators(base["estimators"])
    return TrainConfig(**base)


def flags_without_effect(args: argparse.Namespace, cfg, images: bool) -> list[str]:
    """Notes on flags that change nothing (one set of flags may serve several runs, so notes, not errors):
    the search's flags with a fixed --lr, --crop-pad without augmentation."""
    notes = [f"{flag} has no effect: --lr fixes the learning rate, so there is no search"
             for flag, value in (("--lr-search-trials", args.lr_search_trials),
                                 ("--lr-search-epochs", args.lr_search_epochs)) if args.lr is not None and value is not None]
    if args.crop_pad is not None and not cfg.augment:
        why = ("--no-augment" if args.augment is False else "the problem holds no images" if not images
               else "the recipe does not augment; add --augment")
        notes.append(f"--crop-pad has no effect: it pads the random crop of the augmentation, which is off ({why})")
    for flag, value in (("--checkpoint-dir", args.checkpoint_dir), ("--checkpoint-points", args.checkpoint_points)):
        if value is not None and not cfg.checkpoint_epochs:
            notes.append(f"{flag} has no effect: no checkpoints are written without --checkpoint-epochs")
    if args.cifar_dir is not None and not cfg.problem.startswith("cifar10"):
        notes.append(f"--cifar-dir has no effect: problem {cfg.problem!r} does not read CIFAR-10")
    return notes


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    check_report_flags(args.no_report, args.report_dir, args.format, args.db)
    ckdir = args.checkpoint_dir or os.path.join(os.path.dirname(os.path.abspath(args.db)), "sbn_checkpoints", "train")
    if cfg.checkpoint_epochs:  # before anything is loaded, trained or stored
        check_out_dir(ckdir, "--checkpoint-dir")
        store, folder = os.path.realpath(args.db), os.path.realpath(ckdir)  # a linked folder is the same folder
        if os.path.commonpath([store, folder]) == folder:  # a checkpoint named like the store would replace it
            raise InputError(f"--db {args.db!r} lies in the checkpoint folder {ckdir!r}, which holds checkpoints "
                             f"only; keep the results store elsewhere")
    tp = build_train_problem(cfg.problem, cifar_dir=args.cifar_dir)
    cfg = prepare(cfg, tp, augment_asked=bool(args.augment))
    for note in flags_without_effect(args, cfg, images=tp.dataset.image_shape is not None):
        print(f"note: {note}", file=sys.stderr)
    out = run_training(cfg, tp, args.db, args.recipe, args.label, ckdir)
    print(f"run {out.run_id}: {len(out.tasks)} tasks, {out.already_done} already stored, {out.trained} trained"
          f"{f', {out.failed} failed' if out.failed else ''} -> {args.db}")
    if cfg.checkpoint_epochs:
        for task in out.tasks:
            files = [checkpoint_file(ckdir, task, e, out.tasks) for e in sorted(cfg.checkpoint_epochs)]
            print(f"checkpoints of {task['estimator']}: {', '.join(f for f in files if os.path.exists(f))}")
        print("score them with: sbn-bench run --problem-file FILE.npz")
    if not args.no_report:
        for fmt, path in render(args.db, [out.run_id], args.report_dir or f"sbn-report/{out.run_id}", args.format).items():
            print(f"report ({fmt}): {path}")
    return 1 if out.failed else 0  # failed tasks are stored with their reason; the exit code says so
