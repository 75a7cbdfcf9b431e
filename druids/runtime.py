"""Where and as what this process runs: device choice, its place in a process group, DDP plumbing.

Base layer: imports nothing of druids. Training and sampling both start, join
and leave process groups through here. A job started by ``torchrun`` (or by
:func:`run_local_processes` for locally spawned CPU processes) announces itself
through ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them this process
is alone (world size 1, rank 0) and nothing here touches ``torch.distributed``.
The backend is NCCL on CUDA and gloo on the CPU. Long work reports through
:func:`progress`, in a notebook or on a terminal.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Process:
    """This process's place in a ``torchrun`` job (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); 1, 0, 0 alone."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Process:
        env = os.environ
        return cls(int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)))


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's GPU (``cuda:<local_rank>``) if CUDA is available, else the CPU."""
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 / AMX instructions (oneDNN's check), read at run time so that other CPUs fall back to fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def join_process_group(device: torch.device | None = None) -> bool:
    """Under ``torchrun``, start the default process group if it is not running yet.

    Returns True if this call started it (the caller then closes it with
    :func:`leave_process_group`). ``device``: this process's device (default:
    CUDA if available), which picks the backend and, on CUDA, the current GPU.
    """
    if Process.from_env().world_size == 1 or dist.is_initialized():
        return False
    device = resolve_device("auto", Process.from_env().local_rank) if device is None else torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(_backend(device))
    return True


def leave_process_group() -> None:
    """Close the default process group (after :func:`join_process_group` returned True)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: torch.device | None = None) -> Iterator[Process]:
    """This process's :class:`Process`, inside a running process group under ``torchrun``.

    Starts the group if needed and closes it again on exit if it started it.
    """
    started = join_process_group(device)
    try:
        yield Process.from_env()
    finally:
        if started:
            leave_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` joins the default process group first."""
    join_process_group()
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


@contextmanager
def rank_zero_first(rank: int) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. generates data or a cache) while the other ranks wait, then they run it."""
    if rank > 0:
        dist.barrier()
    yield
    if rank == 0 and dist.is_initialized():
        dist.barrier()


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that is free now: the rendezvous of locally spawned gloo processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_environment(rank: int, world_size: int, port: int) -> None:
    """Set the environment ``torchrun`` would give process ``rank`` of ``world_size`` local processes."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def run_local_processes(
    worker: Callable, args: tuple, processes: int, done: Callable[[], int], total: int, desc: str, show: bool = True
) -> None:
    """``worker(*args)`` in ``processes`` spawned local CPU processes, each in the environment ``torchrun`` would give
    it (:func:`spawn_environment`, a free port on 127.0.0.1) with ``cpu_count // processes`` torch threads.

    For data-parallel work that joins a gloo process group (:func:`process_group`): DDP training, the afCRPS
    fine-tuning. This process only waits: its progress bar (``desc``, ``show``) follows ``done()``, the steps
    finished out of ``total`` as the workers' rank 0 records them (a log or a small file), polled every 2 s.
    ``worker`` must be importable (a module-level function) and ``args`` must pickle (tensors travel in shared
    memory). An exception in a worker is raised here (``torch.multiprocessing.ProcessRaisedException``, the
    other workers stopped); one here (an interrupt) stops the workers.
    """
    import torch.multiprocessing as mp

    spawned = (processes, free_local_port(), _threads_per_process(processes), worker, args)
    workers = mp.spawn(_local_process, args=spawned, nprocs=processes, join=False)
    try:
        with progress(total=total, initial=min(total, done()), disable=not show, desc=desc, unit="step") as bar:
            while not workers.join(timeout=2):
                bar.update(max(0, done() - bar.n))
            bar.update(max(0, done() - bar.n))
    except BaseException:  # e.g. an interrupted notebook cell: the workers go too
        for worker_process in workers.processes:
            if worker_process.is_alive():
                worker_process.terminate()
        raise


def _local_process(rank: int, processes: int, port: int, threads: int, worker: Callable, args: tuple) -> None:
    """One of :func:`run_local_processes`'s processes: the ``torchrun`` environment and threads, then the work."""
    spawn_environment(rank, processes, port)
    torch.set_num_threads(threads)
    worker(*args)


def local_processes(n_items: int, device: str | torch.device = "auto") -> int:
    """How many local processes :func:`process_map` uses for ``n_items`` independent items of work on ``device``:
    one per CPU core, at most one per item; 1 for work on CUDA (``"auto"``: CUDA where available), where the GPU
    is the one worker."""
    if resolve_device(device).type == "cuda":
        return 1
    return max(1, min(n_items, os.cpu_count() or 1))


def _threads_per_process(processes: int) -> int:
    """Torch threads for each of ``processes`` local processes: the CPU's cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // processes)


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def process_map(function: Callable, items: Iterable, processes: int | None = None, desc: str | None = None, progress: bool = True) -> list:
    """``[function(item) for item in items]``, shared out over ``processes`` spawned local CPU processes.

    For independent pieces of CPU work too small to keep two threads busy
    (a Jacobian product at batch 1, a tiny network, the world's dynamics):
    on the 2-core CPU, two one-thread processes do 1.4-1.9x the work of one
    process with two threads, spawning included (``bench/process_map.py``). Each process runs
    ``cpu_count // processes`` threads. ``function`` must be importable (a
    module-level function) and items and results must pickle; results come
    back in the order of ``items``. ``processes``: default
    :func:`local_processes`; 1 runs here, without spawning. An exception in a
    worker is raised here, and the items not started yet are cancelled.
    ``desc``/``progress``: a progress bar over finished items (:func:`progress`).
    Call it from a notebook, a function or a script's ``if __name__ == "__main__"`` block, not while a module
    is being imported (the spawned workers would wait for the import lock).
    """
    items = list(items)
    processes = local_processes(len(items)) if processes is None else processes
    if processes <= 1:
        return [function(item) for item in _with_bar(items, desc, progress)]
    import multiprocessing

    results: list = [None] * len(items)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, spawn, _set_threads, (_threads_per_process(processes),)) as pool:
        futures = {pool.submit(function, item): k for k, item in enumerate(items)}
        try:
            for future in _with_bar(as_completed(futures), desc, progress, total=len(items)):
                results[futures[future]] = future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return results


def _with_bar(iterable, desc: str | None, show: bool, **kwargs):
    """``iterable`` with a :func:`progress` bar when ``show`` (else as it is)."""
    return progress(iterable, desc=desc, **kwargs) if show else iterable


#: Environment variable that makes :func:`progress` print plain text (``druids run`` sets it to "text").
PROGRESS_ENV = "DRUIDS_PROGRESS"


def progress(iterable=None, **kwargs):
    """A tqdm progress bar for long work (training steps, forecast leads, data chunks).

    Interactively it is ``tqdm.auto`` (a widget in Jupyter). With
    ``DRUIDS_PROGRESS=text`` it is plain text on stderr, updated at most every
    ``mininterval`` = 5 s: papermill streams a kernel's stderr, so ``druids run``
    shows the progress of a chapter's long cells on its terminal (a widget
    would reach only the executed notebook). ``kwargs`` go to tqdm.
    """
    if os.environ.get(PROGRESS_ENV) == "text":
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", 5.0)
        kwargs.setdefault("file", sys.stderr)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
