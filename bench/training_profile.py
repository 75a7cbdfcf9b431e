"""Where a CPU training step of the ``default`` model spends its time (torch.profiler; not a test).

One of the two processes that ``druids train`` runs on a 2-core CPU does, per step,
the forward and backward pass of a micro-batch of 4 and an AdamW step on one thread
(the all-reduce between the processes is left out). This script profiles ``--steps``
such steps (after 3 warm-up steps) of the model of ``bench/training.py``'s ``build``
(eager fp32 and, with ``--variant fast``, compile + bf16 + channels-last) and sums the
operators' self CPU time into groups: convolution (forward and backward), normalisation
and element-wise work, the optimiser, data movement (copies, layout changes, padding)
and the rest. The groups say what bounds training on the CPU: the issue "Fast on a
laptop" asks for the bottleneck before the options. Results go to
``bench/training_profile_<variant>.json``.

Usage: ``OMP_WAIT_POLICY=PASSIVE python bench/training_profile.py [--steps 10] [--variant eager|fast]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from training import GRID, N_CONDITION, N_TARGET, build

from druids.config import get_config

GROUPS = {
    "convolution": ("conv", "mkldnn"),
    "optimiser": ("adam", "_foreach", "optimizer"),
    "data movement": ("copy", "contiguous", "pad", "cat", "clone", "to_", "_to_copy", "permute", "transpose", "view", "reshape", "empty", "zero", "fill"),
    "normalisation and element-wise": ("mul", "add", "div", "sub", "pow", "sqrt", "rsqrt", "mean", "sum", "exp", "gelu", "silu", "relu", "norm", "where", "neg", "threshold", "sigmoid"),
}


def group_of(name: str) -> str:
    """The group of an operator name (first match in ``GROUPS``, else "other")."""
    lower = name.lower()
    for group, keys in GROUPS.items():
        if any(key in lower for key in keys):
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--variant", choices=("eager", "fast"), default="eager")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fast = args.variant == "fast"
    module, optimizer = build(get_config("default").model, torch.device("cpu"), fast, fast)
    x0, c = torch.randn(args.micro_batch, N_TARGET, *GRID), torch.randn(args.micro_batch, N_CONDITION, *GRID)
    generator = torch.Generator().manual_seed(0)

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=fast):
            loss = module(x0, c, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups: Counter = Counter()
    for e in events:
        groups[group_of(e.key)] += e.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    out = {
        "date": datetime.date.today().isoformat(), "device": f"{platform.machine()} CPU, {os.cpu_count()} cores, 1 thread",
        "torch": torch.__version__, "command": f"python bench/training_profile.py --steps {args.steps} --micro-batch {args.micro_batch} --variant {args.variant}",
        "ms_per_step": total / 1000 / args.steps,
        "share_by_group": {g: v / total for g, v in groups.most_common()},
        "top_operators": [{"name": e.key, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / args.steps} for e in top],
    }  # fmt: skip
    for g, share in out["share_by_group"].items():
        print(f"{g:32s} {100 * share:5.1f} %")
    for row in out["top_operators"]:
        print(f"  {row['name']:40s} {100 * row['share']:5.1f} %  {row['calls_per_step']:.0f} calls/step")
    Path(__file__).with_name(f"training_profile_{args.variant}.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
