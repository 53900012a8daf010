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

from estimators.errors import InputError


def add_parser(sub) -> None:
    from bench.store import DEFAULT_DB
    from bench.training.recipes import RECIPES
    from bench.training.loop import OPTIMIZERS

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
    p.add_argument("--format", default="html,pdf", help="report formats (default: html,pdf)")
    p.set_defaults(func=run)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{flag} {text!r} must be a comma list of integers") from None


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, disable=None, leave=False)


def build_config(args: argparse.Namespace):
    from bench.commands.run import split_estimators
    from bench.sweep import expand_estimators
    from bench.training.recipes import RECIPES, TrainConfig

    base = dict(RECIPES[args.recipe])
    if args.estimator:
        base["estimators"] = [e for text in args.estimator for e in split_estimators(text)]
    flags = dict(problem=args.problem, epochs=args.epochs, lr=args.lr, lr_search_trials=args.lr_search_trials,
                 lr_search_epochs=args.lr_search_epochs, optimizer=args.optimizer, batch=args.batch,
                 samples=args.samples, augment=args.augment, crop_pad=args.crop_pad, seed=args.seed,
                 device=args.device, dtype=args.dtype, name=args.name, checkpoint_points=args.checkpoint_points)
    base.update({k: v for k, v in flags.items() if v is not None})
    if args.checkpoint_epochs is not None:
        base["checkpoint_epochs"] = _ints(args.checkpoint_epochs, "--checkpoint-epochs")
    elif args.epochs is not None:  # a recipe's checkpoints past a shortened run are dropped, not an error
        base["checkpoint_epochs"] = tuple(e for e in base.get("checkpoint_epochs", ()) if e <= args.epochs)
    base["estimators"] = expand_estimators(base["estimators"])
    return TrainConfig(**base)


def run(args: argparse.Namespace) -> int:
    import torch

    from bench.manifest import build_manifest
    from bench.store import Store
    from bench.training.setups import build_train_problem
    from bench.training.plan import checkpoint_file, plan_train_tasks, run_train_task
    from estimators import registry

    cfg = build_config(args)
    tp = build_train_problem(cfg.problem, cifar_dir=args.cifar_dir)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but CUDA is not available here (pass --device cpu)")
    if cfg.augment and tp.dataset.image_shape is None:
        if args.augment:
            raise InputError(f"problem {cfg.problem!r} holds no images; --augment (flip and crop) needs images")
        cfg = cfg.replace(augment=False)  # the recipe's augmentation applies to image data only
    for espec in cfg.estimators:
        registry.get(espec).check(tp.problem)
    tasks = plan_train_tasks(cfg, list(cfg.estimators))
    ckdir = args.checkpoint_dir or os.path.join(os.path.dirname(os.path.abspath(args.db)), "sbn_checkpoints", "train")
    store = Store(args.db, create=True)
    try:
        run_id = f"{cfg.name}-{cfg.hash[:10]}"
        if not store.has_run(run_id):
            manifest = build_manifest(cfg.as_dict(), cfg.hash, cfg.seed, cfg.device, preset=args.recipe,
                                      label=args.label)
            manifest.update(run_id=run_id, kind="train")
            store.create_run(run_id, manifest, cfg.hash, label=args.label, preset=args.recipe)
        done = store.done_keys(run_id)
        todo = [t for t in tasks if t["key"] not in done]
        failed = 0
        for i, task in enumerate(todo, start=1):
            print(f"[{i}/{len(todo)}] training {task['estimator']} on {task['problem']}", file=sys.stderr)
            bar = _bar(cfg.epochs, task["estimator"])
            try:
                res = run_train_task(task, tp, ckdir, progress=lambda e, b=bar: b is not None and e > 0 and b.update(1))
            finally:
                if bar is not None:
                    bar.close()
            store.write_task(run_id, res["task"], curves=res["curves"])
            failed += res["task"]["status"] != "done"
            if res["task"]["error"]:
                print(f"  {res['task']['status']}: {res['task']['error']}", file=sys.stderr)
    finally:
        store.close()
    print(f"run {run_id}: {len(tasks)} tasks, {len(tasks) - len(todo)} already stored, {len(todo)} trained"
          f"{f', {failed} failed' if failed else ''} -> {args.db}")
    if cfg.checkpoint_epochs:
        print(f"checkpoints: {os.path.dirname(os.path.dirname(checkpoint_file(ckdir, tasks[0], 0)))}/"
              f"<problem>__<estimator>__<key>/chk-<epoch>.npz (score with: sbn-bench run --problem-file FILE)")
    if not args.no_report:
        from bench.commands.report import render

        for fmt, path in render(args.db, [run_id], args.report_dir or f"sbn-report/{run_id}", args.format).items():
            print(f"report ({fmt}): {path}")
    return 0
