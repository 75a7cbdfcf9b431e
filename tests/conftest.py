"""Test session set-up: keep generated data, caches and figures out of the repository.

Environment variables are set before ``druids`` is imported, and the kernels
that nbval starts for the chapters inherit them.
"""

import os
import tempfile
from pathlib import Path

# Under pytest-xdist (``make test`` runs the unit tests in two workers) every worker process keeps its own data, caches
# and figures, so that two workers never write the same store or run directory; a directory the user
# set beforehand is kept.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_SESSION = Path(tempfile.mkdtemp(prefix=f"druids-tests-{_WORKER}-" if _WORKER else "druids-tests-"))
_INHERITED = os.environ.get("DRUIDS_TEST_SESSION")
os.environ["DRUIDS_TEST_SESSION"] = str(_SESSION)
for _name in ("DATA", "CACHE", "FIGURES", "VALUES"):
    _var = f"DRUIDS_{_name}"
    if _var not in os.environ or (_INHERITED and os.environ[_var].startswith(_INHERITED)):
        os.environ[_var] = str(_SESSION / _name.lower())
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# torch on a busy 2-core machine: OpenMP busy-waiting slows small ops 50-100x
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from druids.config import get_config  # noqa: E402


@pytest.fixture(scope="session")
def smoke_config():
    """The smoke profile's configuration."""
    return get_config("smoke")


@pytest.fixture(scope="session")
def smoke_store(smoke_config):
    """Path of the smoke profile's Held–Suarez store, generated once per test run."""
    from druids.data import heldsuarez

    return heldsuarez.generate(smoke_config.world, progress=False)


@pytest.fixture(scope="module")
def torch_one_thread():
    """One intra-op thread for tiny tensors: OpenMP overhead dominates on a busy 2-core machine,
    and it is the same arithmetic as the single-threaded DDP workers."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
