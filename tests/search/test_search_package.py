"""fnn.search is a package of re-exports: every public name of the old module fnn/search.py stays importable."""

import importlib

from fnn import search

# __all__ of fnn/search.py before it became a package.
OLD_ALL = [
    "LogUniform", "Uniform", "Choice", "loguniform", "uniform", "choice", "grid", "sample",
    "Trial", "SearchResult", "VmapResult", "sort_trials", "load_jsonl",
    "grid_search", "random_search", "fit_objective", "vmap_search", "RESERVED",
]


def test_every_old_public_name_is_still_importable():
    for name in OLD_ALL:
        assert hasattr(search, name), name
    # The same names, with uniform renamed uniform_range (uniform stays as a deprecated alias).
    assert sorted(search.__all__) == sorted([n for n in OLD_ALL if n != "uniform"] + ["uniform_range"])
    assert search.RESERVED == ("seed", "init_scale", "weight_decay")


def test_the_package_only_re_exports():
    modules = {"spaces": ["LogUniform", "Uniform", "Choice", "loguniform", "uniform_range", "uniform", "choice",
                          "grid", "sample", "RESERVED"],
               "trials": ["Trial", "SearchResult", "sort_trials", "load_jsonl"],
               "runs": ["grid_search", "random_search", "fit_objective"],
               "vmap": ["vmap_search", "VmapResult"]}
    for module, names in modules.items():
        mod = importlib.import_module(f"fnn.search.{module}")
        for name in names:
            assert getattr(search, name) is getattr(mod, name), f"{module}.{name}"
