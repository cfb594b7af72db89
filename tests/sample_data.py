"""Hide the real Fashion-MNIST from the loaders, so CLI runs use the embedded sample."""

import contextlib

import pytest

from fnn.data import datasets


@contextlib.contextmanager
def sample_only(root):
    """Within: no system data dir, an empty HOME (no download cache), no FNN_DATA."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets, "SYSTEM_DATA_DIR", root / "none")
        mp.setenv("HOME", str(root))
        mp.delenv("FNN_DATA", raising=False)
        yield
