"""``python -m LungDDPMLib.training``: train a preset on a synthetic toy set, alone or under torchrun.

A smoke test of the whole training stack (and what the distributed test launches), not a way to train a useful
model: real data come from the dataset loaders. Example::

    torchrun --standalone --nproc-per-node 2 -m LungDDPMLib.training --run-dir run --steps 3 --grid 16
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from ..config import preset
from ..errors import LungDDPMError
from .config import TrainConfig
from .datasets import make_toy_pairs
from .distributed import init_from_env, shutdown
from .loss import seeded_model
from .trainer import Trainer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m LungDDPMLib.training", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, help="folder for checkpoints and loss.jsonl")
    p.add_argument("--steps", type=int, default=10, help="optimiser updates to reach")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--grid", type=int, default=None, help="cubic grid size (default: the preset's)")
    p.add_argument("--samples", type=int, default=8, help="toy pairs in the data set")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", choices=("no", "yes", "auto"), default="auto")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        info = init_from_env(args.device)
    except LungDDPMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        overrides = {"grid": (args.grid,) * 3} if args.grid else {}
        model_cfg = preset(args.preset, **overrides)
        config = TrainConfig(
            lr=args.lr,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            max_steps=args.steps,
            ema_start=0,
            ema_every=1,
            ema_decay=0.9,
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
            seed=args.seed,
        )
        sys.stdout.write(f"rank {info.rank} of world_size {info.world_size} (backend {info.backend or 'none'})\n")
        sys.stdout.flush()
        resume = {"no": False, "yes": True, "auto": "auto"}[args.resume]
        trainer = Trainer(
            seeded_model(model_cfg, args.seed),
            make_toy_pairs(args.samples, model_cfg.grid, args.seed),
            config,
            args.run_dir,
            device=args.device,
            distributed=info,
            resume=resume,
        )
        result = trainer.fit()
        # One write per line: the ranks share a pipe, and print() under PYTHONUNBUFFERED writes the text and its
        # newline separately, so another rank's line could land between them.
        sys.stdout.write(f"rank {info.rank} done at step {result.step}\n")
        sys.stdout.flush()
        if info.is_main:
            summary = {
                "step": result.step,
                "world_size": info.world_size,
                "last_loss": result.last_loss,
                "checkpoint": str(result.checkpoint),
            }
            sys.stdout.write(json.dumps(summary) + "\n")
            sys.stdout.flush()
    except LungDDPMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
