"""fnn.plot: training curves and confusion matrices as PNG files."""

import sys

import numpy as np
import pytest

from fnn.plot import plot_confusion, plot_history
from fnn.train import History

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(n=5, val=True):
    return History([{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 1 - 0.3 / e,
                     "val_loss": 1.1 / e if val else None, "val_accuracy": 1 - 0.35 / e if val else None}
                    for e in range(1, n + 1)])


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return len(data), width, height


@pytest.mark.parametrize("history", [_history(), _history(1), _history(4, val=False),
                                     _history(3).records, {"epoch": [1, 2], "train_loss": [1.0, 0.5]}])
def test_plot_history_writes_png(tmp_path, history):
    path = plot_history(history, tmp_path / "sub" / "curves.png", title="test")
    nbytes, width, height = _png_size(path)
    assert nbytes > 10_000 and width > 2 * height > 600  # two panels side by side


def _red_pixels(path):
    import matplotlib.image
    rgb = matplotlib.image.imread(path)[..., :3]
    return int(np.sum(np.all(np.abs(rgb - np.array([0xd6, 0x27, 0x28]) / 255) < 0.05, axis=-1)))


def test_plot_history_marks_points_as_stars(tmp_path):
    """A point (the SWA mean's validation figures) is drawn in red on the panels whose metric it has."""
    plain = plot_history(_history(), tmp_path / "plain.png")
    both = plot_history(_history(), tmp_path / "both.png",
                        points={"SWA mean": {"epoch": 5, "val_accuracy": 0.97, "val_loss": 0.15}})
    one = plot_history(_history(), tmp_path / "one.png", points={"SWA mean": {"epoch": 5, "val_accuracy": 0.97}})
    assert _red_pixels(plain) == 0
    assert _red_pixels(both) > _red_pixels(one) > 50
    with pytest.raises(ValueError, match="point 'SWA mean' needs an 'epoch'"):
        plot_history(_history(), tmp_path / "x.png", points={"SWA mean": {"val_accuracy": 0.9}})


def test_plot_confusion_writes_png(tmp_path):
    conf = np.diag([90, 80, 70]) + 3
    path = plot_confusion(conf, ["a", "b", "c"], tmp_path / "conf.png")
    nbytes, width, height = _png_size(path)
    assert nbytes > 10_000 and width > 400 and height > 400
    plot_confusion(conf, None, tmp_path / "conf2.png")
    assert (tmp_path / "conf2.png").stat().st_size > 10_000


def test_plot_errors(tmp_path):
    with pytest.raises(ValueError, match="no epochs"):
        plot_history(History(), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"square \(M, M\)"):
        plot_confusion(np.zeros((3, 4)), None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="expected 3 class names"):
        plot_confusion(np.eye(3), ["a", "b"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    with pytest.raises(ImportError, match=r"pip install 'fnn\[plots\]'"):
        plot_history(_history(), tmp_path / "x.png")
