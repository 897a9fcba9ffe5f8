"""Where two machines' bits part: the digest of every ATen op's output in the demo's first pretraining steps.

    python scripts/bits-trace.py --data data/demo/synthetic/<key>/source/train --out trace.json [--steps 2]
    python scripts/bits-trace.py --diff mine.json theirs.json

Runs as a pinned `vitpeft` job does (vitpeft.training.kernels), on the
config's pretraining (config/demo.yaml by default) at its real batch, and
writes [op, sha256 prefix] per call, in call order (ops that only allocate,
whose bytes are whatever memory held, are left out). `--diff` names the first
op whose output differs, with the ops before it: the kernel the pin does not
cover. This is how MKL's vector math was found (README, Reliability): run it on
both machines, or under `qemu-x86_64 -cpu <model>,vendor=GenuineIntel` to stand
for another vendor's CPU.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path


def trace(config: Path, data: Path, steps: int) -> list:
    from vitpeft.training import kernels

    kernels.pin_environment()
    import torch
    import yaml
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from vitpeft.models import pretrain

    kernels.use(torch.device("cpu"))
    calls = []

    class Digests(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if "empty" not in func.__name__:
                hashed = hashlib.sha256()
                for tensor in tree_flatten(result)[0]:
                    if isinstance(tensor, torch.Tensor) and tensor.numel():
                        hashed.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                calls.append([str(func), hashed.hexdigest()[:12]])
            return result

    cfg = yaml.safe_load(config.read_text())
    with Digests():
        pretrain.pretrain({**cfg["pretrain"], "steps": steps}, cfg["backbone"]["model"], data, log=lambda *_: None)
    return calls


def diff(mine: list, theirs: list) -> str:
    for index, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            before = ", ".join(op for op, _ in mine[max(0, index - 4) : index])
            return f"the outputs part at call {index + 1} of {len(mine)}: {a[0]} (after {before})"
    if len(mine) != len(theirs):
        return f"the same bits for {min(len(mine), len(theirs))} calls, then one trace ends ({len(mine)} vs {len(theirs)})"
    return f"the same bits in all {len(mine)} calls"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("config/demo.yaml"))
    parser.add_argument("--data", type=Path, help="the synthetic source domain's train split (a prepared dataset)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--diff", nargs=2, type=Path, metavar=("MINE", "THEIRS"))
    args = parser.parse_args()
    if args.diff:
        print(diff(*(json.loads(path.read_text()) for path in args.diff)))
        return 0
    if not args.data or not args.out:
        parser.error("--data and --out are needed to trace (or --diff MINE THEIRS)")
    calls = trace(args.config, args.data, args.steps)
    args.out.write_text(json.dumps(calls) + "\n")
    print(f"wrote {args.out}: {len(calls)} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
