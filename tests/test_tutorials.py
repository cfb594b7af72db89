"""The tutorials and the documentation site.

Each tutorial script runs with --quick in its own process and must write its figures; the code
blocks of the concept pages run; the excerpts the tutorial pages include exist; and, when
MkDocs is installed (``pip install -e '.[docs]'``), ``mkdocs build --strict`` passes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "examples" / "tutorials"
DOCS = ROOT / "docs"

FIGURES = {
    "01_layers.py": ["01_sine_fit.png", "01_jit_speed.png"],
    "02_backprop.py": ["02_grad_agreement.png", "02_manual_vs_autodiff.png"],
    "03_init.py": ["03_activation_std.png", "03_activation_hist.png", "03_symmetry.png", "03_training.png"],
    "04_optimizers.py": ["04_trajectories.png", "04_loss.png", "04_lr_sensitivity.png"],
    "05_regularization.py": ["05_curves.png", "05_weights.png", "05_history_none.png",
                             "05_history_dropout.png"],
    "06_convnets.py": ["06_curves.png", "06_confusion.png", "06_misclassified.png", "06_feature_maps.png"],
    "07_diagnostics.py": ["07_grad_norms.png", "07_learning_rates.png", "07_search.png"],
}
MIN_BYTES = 8_000          # a figure with axes, text and data; an empty canvas is ~2 KB
DOC_IMAGE_LIMIT = 150_000  # docs/img/*.png are committed: keep them small
TIMEOUT = 900


def _env() -> dict:
    env = dict(os.environ)
    env["FNN_TUTORIAL_QUICK"] = "1"
    env["MPLBACKEND"] = "Agg"
    env["NO_MKDOCS_2_WARNING"] = "1"
    # Compilation dominates these short runs; XLA's cheapest backend optimization halves it.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    return env


def test_every_tutorial_is_listed():
    scripts = {p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py")}
    assert scripts == set(FIGURES)


@pytest.mark.slow  # seven subprocesses, ~2 min of CPU: CI's slow stage runs them
@pytest.mark.parametrize("script", sorted(FIGURES))
def test_tutorial_runs_quick_and_writes_its_figures(script, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figures"
    proc = subprocess.run([sys.executable, str(TUTORIALS / script), "--quick", "--out", str(out)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    from matplotlib.image import imread

    for name in FIGURES[script]:
        png = out / name
        assert png.is_file(), f"{script} did not write {name}; wrote {sorted(p.name for p in out.glob('*'))}"
        raw = png.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
        assert len(raw) > MIN_BYTES, f"{name} is only {len(raw)} bytes"
        pixels = imread(png)
        assert pixels.shape[0] >= 150 and pixels.shape[1] >= 300, f"{name} is {pixels.shape[:2]} pixels"
        assert pixels[..., :3].std() > 0.02, f"{name} is (almost) one colour"


def _python_blocks(page: Path) -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
            if not b.lstrip().startswith("--8<--")]


_RUN_BLOCKS = """
import sys, traceback
for i, path in enumerate(sys.argv[1:]):
    code = open(path, encoding="utf-8").read()
    try:
        exec(compile(code, f"block {i + 1}", "exec"), {"__name__": "__main__"})
    except Exception:
        print(f"block {i + 1} failed:\\n{code}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


_SLOW_PAGE = pytest.mark.slow  # the pages with training runs: ~70 s of CPU together, CI's slow stage runs them


@pytest.mark.parametrize("page", ["concepts.md", "index.md", pytest.param("train-save-predict.md", marks=_SLOW_PAGE),
                                  pytest.param("optax.md", marks=_SLOW_PAGE),
                                  pytest.param("reproducibility.md", marks=_SLOW_PAGE),
                                  pytest.param("api/*.md", marks=_SLOW_PAGE)])
def test_code_blocks_on_the_page_run(page, tmp_path):
    """Every python block runs, each in a fresh namespace (one process per entry, so JAX is
    imported once; "api/*.md" runs every API page's examples together)."""
    pages = sorted(DOCS.glob(page))
    assert pages
    if page == "optax.md":
        pytest.importorskip("optax")
    for p in pages:
        assert _python_blocks(p), f"{p.relative_to(DOCS)} has no python example"
    blocks = [b for p in pages for b in _python_blocks(p)]
    paths = []
    for i, code in enumerate(blocks):
        path = tmp_path / f"block_{i + 1}.py"
        path.write_text(code, encoding="utf-8")
        paths.append(str(path))
    proc = subprocess.run([sys.executable, "-c", _RUN_BLOCKS, *paths], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{page}: {proc.stderr[-4000:]}"


def test_included_excerpts_and_images_exist():
    for page in sorted((DOCS / "tutorials").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for script, section in re.findall(r'--8<-- "([^":]+):([^"]+)"', text):
            source = (TUTORIALS / script).read_text(encoding="utf-8")
            assert f"# --8<-- [start:{section}]" in source, f"{page.name}: no section {section!r} in {script}"
            assert f"# --8<-- [end:{section}]" in source, f"{page.name}: section {section!r} not closed"
        for image in re.findall(r"\]\(\.\./img/([^)]+\.png)\)", text):
            path = DOCS / "img" / image
            assert path.is_file(), f"{page.name} shows {image}, which is not in docs/img"
    for png in (DOCS / "img").glob("*.png"):
        assert png.stat().st_size < DOC_IMAGE_LIMIT, f"docs/img/{png.name} is {png.stat().st_size} bytes"


def test_mkdocs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed: pip install -e '.[docs]'")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "core-layers" / "index.html").is_file()
