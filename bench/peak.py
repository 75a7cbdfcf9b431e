"""What the CPU can do: dense matmul and convolution peaks in fp32 and bf16, for the other benches.

``cpu_peak(threads)`` measures, with ``threads`` torch threads, the best of a
few repetitions of
- a 2048 x 2048 x 2048 matrix product (2 n^3 FLOP), fp32 and bf16;
- a 3 x 3 convolution of the U-Net's size (64 -> 64 channels, batch 8 on a
  34 x 66 padded grid), channels-last, forward only and forward + backward
  (input and weight gradients, 3x the forward FLOP), fp32 and bf16.
Returns GFLOP/s per case. ``bench/training.py`` and ``bench/sampling.py`` call
it in the same run as their own measurements and report each result as a
fraction of it. Not a test; imported by the bench scripts (run them from the
repository root: ``python bench/training.py``).
"""

from __future__ import annotations

import time

import torch


def _best_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(dtype: torch.dtype, n: int = 2048) -> float:
    """Dense ``n x n`` matrix product rate, GFLOP/s."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / _best_seconds(lambda: a @ b) / 1e9


def conv_gflops(dtype: torch.dtype, backward: bool, channels: int = 64, batch: int = 8, grid=(34, 66)) -> float:
    """3 x 3 convolution rate (channels-last), forward or forward + backward, GFLOP/s."""
    conv = torch.nn.Conv2d(channels, channels, 3, bias=False).to(dtype).to(memory_format=torch.channels_last)
    x = torch.randn(batch, channels, *grid).to(dtype).to(memory_format=torch.channels_last).requires_grad_(backward)
    forward_flop = 2 * batch * channels * channels * 9 * (grid[0] - 2) * (grid[1] - 2)

    def run():
        y = conv(x)
        if backward:
            torch.autograd.grad(y, (x, conv.weight), torch.ones_like(y))

    with torch.set_grad_enabled(backward):
        seconds = _best_seconds(run)
    return (3 if backward else 1) * forward_flop / seconds / 1e9


def cpu_peak(threads: int) -> dict:
    """GFLOP/s of matmul and convolution, fp32 and bf16, with ``threads`` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {"threads": threads}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            out[f"matmul_{name}_gflops"] = matmul_gflops(dtype)
            out[f"conv_forward_{name}_gflops"] = conv_gflops(dtype, backward=False)
            out[f"conv_train_{name}_gflops"] = conv_gflops(dtype, backward=True)
        return out
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    import json
    import os

    print(json.dumps(cpu_peak(os.cpu_count() or 1), indent=2))
