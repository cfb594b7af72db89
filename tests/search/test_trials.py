"""fnn.search.trials: sort_trials, JSON lines (trial_json, save_jsonl, load_jsonl) and SearchResult.table."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from fnn import search
from fnn.search.trials import trial_json

NAN = math.nan


def trials():
    return [search.Trial(0, {"lr": 0.1}, 2.0, {}, 0.5), search.Trial(1, {"lr": 0.2}, NAN, {}, 0.5),
            search.Trial(2, {"lr": 0.3}, 1.0, {}, 0.5), search.Trial(3, {"lr": 0.4}, 2.0, {}, 0.5)]


def test_sort_trials_best_first_nan_last_ties_by_index():
    assert [t.index for t in search.sort_trials(trials())] == [2, 0, 3, 1]
    assert [t.index for t in search.sort_trials(trials(), "max")] == [0, 3, 2, 1]
    with pytest.raises(ValueError, match="mode"):
        search.sort_trials(trials(), "best")


def test_trial_json_round_trips_through_load_jsonl(tmp_path):
    t = search.Trial(4, {"lr": np.float32(0.5), "width": np.int64(8), "shape": (2, 3)}, np.float64(NAN),
                     {"curve": jnp.asarray([1.0, 2.0]), "inf": math.inf}, 1.25)
    line = trial_json(t)
    assert "\n" not in line
    assert json.loads(line) == {"index": 4, "config": {"lr": 0.5, "width": 8, "shape": [2, 3]}, "score": None,
                                "metrics": {"curve": [1.0, 2.0], "inf": None}, "seconds": 1.25}
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n\n" + trial_json(trials()[0]) + "\n", encoding="utf-8")  # blank lines skipped
    loaded = search.load_jsonl(path)
    assert [u.index for u in loaded] == [4, 0] and math.isnan(loaded[0].score) and loaded[1].score == 2.0
    assert loaded[0].config == {"lr": 0.5, "width": 8, "shape": [2, 3]}
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        search.load_jsonl(path)


def test_search_result_best_table_and_save_jsonl(tmp_path):
    result = search.SearchResult(search.sort_trials(trials()), "min")
    assert result.best.index == 2 and result.best_config == {"lr": 0.3}
    lines = result.table().splitlines()
    assert lines[0].split() == ["rank", "score", "(min)", "lr", "seconds"]
    assert [row.split()[:3] for row in lines[1:]] == [["1", "1", "0.3"], ["2", "2", "0.1"], ["3", "2", "0.4"],
                                                       ["4", "nan", "0.2"]]
    assert len(result.table(max_rows=2).splitlines()) == 3
    path = result.save_jsonl(tmp_path / "sub" / "r.jsonl")
    assert [t.index for t in search.load_jsonl(path)] == [2, 0, 3, 1]
