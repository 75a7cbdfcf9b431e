"""Benchmark of the Held–Suarez world generator and oracle ensembles (not a test).

Measures, in one run on the current machine:
1. dinosaur's bare integration loop (dynamics + Held–Suarez forcing + filter;
   no noise, no output): simulated days per second;
2. the full generator (noise, mass fixer, 6-hourly output, grid conversion,
   zarr writing): simulated days per second, and its slowdown vs 1;
3. a 32-member oracle ensemble, members run serially vs one jax.vmap batch:
   seconds per member and per simulated member-day.
Compilation is excluded (every program is warmed up first). Results go to
``bench/data_generation.json``; copy the summary into ``bench/RESULTS.md``.

Usage: ``python bench/data_generation.py [--days 20] [--members 32]``
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
from dinosaur import time_integration

from druids.config import get_config
from druids.data import heldsuarez


def timed(fn, repeats: int = 1) -> float:
    """Best wall time of ``repeats`` calls, seconds (results blocked until ready)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=20.0, help="simulated days per timing")
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--lead-days", type=float, default=2.0)
    args = parser.parse_args()

    world_cfg = dataclasses.replace(get_config("default").world, spinup_days=0.0, n_days=args.days, chunk_times=40)
    world = heldsuarez.get_world(world_cfg)
    outputs = world_cfg.n_times
    state = world.initial_state(0)

    bare = jax.jit(time_integration.trajectory_from_step(world._step, 1, outputs * world_cfg.steps_per_output))
    timed(lambda: bare(state))
    bare_s = timed(lambda: bare(state), repeats=2)

    with tempfile.TemporaryDirectory() as tmp:
        heldsuarez.generate(world_cfg, Path(tmp) / "warm.zarr", progress=False)
        start = time.perf_counter()
        heldsuarez.generate(world_cfg, Path(tmp) / "timed.zarr", progress=False)
        generator_s = time.perf_counter() - start
        os.environ["DRUIDS_DATA"] = tmp
        heldsuarez.generate(world_cfg, progress=False)
        n_steps = int(args.lead_days * 24 / world_cfg.output_hours)
        ensemble = {}
        for label, batch in (("serial", 1), ("vmap", args.members)):
            heldsuarez.oracle_ensemble(world_cfg, 0, args.members, n_steps, seed=0, member_batch=batch)
            ensemble[label] = timed(
                lambda: heldsuarez.oracle_ensemble(world_cfg, 0, args.members, n_steps, seed=0, member_batch=batch).temperature.values
            )

    days = outputs * world_cfg.output_hours / 24
    member_days = args.members * args.lead_days
    result = {
        "date": datetime.date.today().isoformat(),
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax backend {jax.default_backend()}",
        "command": "python bench/data_generation.py " + f"--days {args.days:g} --members {args.members} --lead-days {args.lead_days:g}",
        "bare_loop_sim_days_per_s": days / bare_s,
        "generator_sim_days_per_s": days / generator_s,
        "generator_slowdown_vs_bare": generator_s / bare_s,
        "oracle_members": args.members,
        "oracle_lead_days": args.lead_days,
        "oracle_serial_s_per_member": ensemble["serial"] / args.members,
        "oracle_vmap_s_per_member": ensemble["vmap"] / args.members,
        "oracle_serial_member_days_per_s": member_days / ensemble["serial"],
        "oracle_vmap_member_days_per_s": member_days / ensemble["vmap"],
        "oracle_vmap_vs_serial_cost_per_member": ensemble["vmap"] / ensemble["serial"],
    }
    out = Path(__file__).with_name("data_generation.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
