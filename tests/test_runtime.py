"""The process layout of :mod:`druids.runtime`: :func:`process_map` against a plain loop."""

import os

import pytest
import torch

from druids import runtime


def _square_with_threads(x: int) -> tuple[int, int, int]:
    return x * x, torch.get_num_threads(), os.getpid()


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def test_process_map_keeps_order_and_splits_threads():
    results = runtime.process_map(_square_with_threads, range(5), processes=2, progress=False)
    assert [r[0] for r in results] == [x * x for x in range(5)]
    assert {r[1] for r in results} == {max(1, (os.cpu_count() or 1) // 2)}
    assert os.getpid() not in {r[2] for r in results}  # spawned, not run here


def test_process_map_in_this_process_with_one():
    results = runtime.process_map(_square_with_threads, [2, 3], processes=1, progress=False)
    assert [r[0] for r in results] == [4, 9]
    assert {r[2] for r in results} == {os.getpid()}


def test_process_map_raises_a_worker_error():
    with pytest.raises(ValueError, match="three"):
        runtime.process_map(_fails_on_three, range(6), processes=2, progress=False)


def test_local_processes_at_most_one_per_item():
    assert runtime.local_processes(1) == 1
    assert 1 <= runtime.local_processes(100) <= (os.cpu_count() or 1)
