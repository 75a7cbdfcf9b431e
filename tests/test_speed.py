"""The speed options change the layout and precision, not the arithmetic they stand for: channels-last
networks give NCHW results, bf16 sampling stays close to fp32, and the caller's model is left as it was."""

import dataclasses

import numpy as np
import pytest
import torch

from druids import runtime
from druids.config import DatasetConfig, ModelConfig, SamplingConfig
from druids.data import normalisation
from druids.models import build_denoiser
from druids.sampling import forecast
from wb2 import wb2_dataset

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMALL = ModelConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1)
VARIABLES = ("u_component_of_wind", "surface_pressure")
DATASET = DatasetConfig(variables=VARIABLES, split_fractions=(0.7, 0.15, 0.15), gap_days=0.5, spectral_truncation=None)


def small_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_denoiser(SMALL, 3, 3 + 4)
    with torch.no_grad():  # non-trivial noise gains (they start at 0)
        for name, param in model.named_parameters():
            if name.endswith("noise.weight"):
                param.add_(0.3 * torch.randn_like(param))
    return model.eval()


def test_channels_last_network_gives_the_nchw_result():
    model = small_model()
    y, c = torch.randn(2, 3, 16, 32), torch.randn(2, 7, 16, 32)
    sigma = torch.tensor([0.5, 3.0])
    with torch.no_grad():
        reference = model.denoise(y, c, sigma)
        model.net.use_channels_last()
        fast = model.denoise(y, c, sigma)
    assert next(model.net.input.parameters()).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    model.net.use_channels_last(False)
    assert next(model.net.input.parameters()).is_contiguous()


def test_norm_mean_square_per_group():
    """The bias-free Norm divides by the RMS of each group of channels (times the input's RMS)."""
    from druids.models.network import Norm

    norm = Norm(16, bias_free=True)
    h, scale = torch.randn(2, 16, 4, 8, dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = norm.double()(h, scale)
    groups = h.reshape(2, 8, 2, 4, 8)  # 8 groups of 2 channels
    rms = groups.pow(2).mean(dim=(2, 3, 4)).sqrt().repeat_interleave(2, dim=1)  # (B, C)
    torch.testing.assert_close(out, h * scale[:, None, None, None] / rms[:, :, None, None], rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def store_and_stats():
    latitudes_gaussian = dict(grid="gaussian", n_lat=16, n_lon=32)
    store = wb2_dataset(VARIABLES, levels=[300.0, 700.0], n_times=24, process="random_walk", seed=0, **latitudes_gaussian)
    return store, normalisation.compute_norm_stats(store, VARIABLES)


@pytest.mark.parametrize("option", ["channels_last", "compile", "bf16"])
def test_fast_sampling_stays_close_and_leaves_the_model_alone(store_and_stats, option):
    store, stats = store_and_stats
    model = small_model()
    plain_cfg = SamplingConfig(n_levels=3, member_batch=2)
    fast_cfg = dataclasses.replace(plain_cfg, **{option: True})
    init = store.isel(time=[3])
    plain = forecast(model, stats, init, 2, 2, plain_cfg, DATASET, seed=1, progress=False)
    fast = forecast(model, stats, init, 2, 2, fast_cfg, DATASET, seed=1, progress=False)
    assert next(model.net.input.parameters()).is_contiguous()  # the caller's model keeps its layout
    assert model.net._compiled_call_impl is None  # and is not compiled
    u = "u_component_of_wind"
    change = float(np.abs(fast[u] - plain[u]).max() / np.abs(plain[u] - init[u].values).max())
    if option in ("channels_last", "compile"):
        assert change < 1e-4  # the same arithmetic in another layout or fused by the compiler
    elif runtime.bf16_supported("cpu"):
        assert 1e-6 < change < 0.05  # bf16 changes the last digits of the network, not the forecast
    else:
        assert change == 0  # falls back to fp32
