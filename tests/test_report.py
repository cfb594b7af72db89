"""fnn.report: the self-contained HTML run report, parsed back with html.parser."""

import base64
import json
from html.parser import HTMLParser

import numpy as np
import pytest

from fnn import plot
from fnn.cli import main
from fnn.report import html_report, write_report
from fnn.train import History

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What the tests read from a report: images, links, scripts, the results cells, table rows."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.urls, self.scripts, self.cells = [], [], 0, {}
        self.rows = {}  # table id -> number of <tr> in its <tbody>
        self.pre, self._table, self._tbody, self._in_pre, self._cell = "", None, False, False, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "data") and v]
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "table":
            self._table = a.get("id")
        elif tag == "tbody":
            self._tbody = True
        elif tag == "tr" and self._tbody:
            self.rows[self._table] = self.rows.get(self._table, 0) + 1
        elif tag == "td" and "data-key" in a and self._table == "results":
            self._cell = a["data-key"]
            self.cells[self._cell] = {"value": a["data-value"], "text": ""}
        elif tag == "pre":
            self._in_pre = True

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._tbody = False
        elif tag == "td":
            self._cell = None
        elif tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._cell is not None:
            self.cells[self._cell]["text"] += data
        if self._in_pre:
            self.pre += data


def check_self_contained(page: Page) -> list[bytes]:
    """No script, nothing fetched from outside, every image an inline PNG; returns the PNGs."""
    assert page.scripts == 0
    assert not [u for u in page.urls if u.startswith(("http:", "https:", "//", "file:"))]
    pngs = []
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG
        pngs.append(data)
    return pngs


def test_fnn_train_writes_the_report(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "mlp", "--epochs", "2", "--limit", "256", "--out", str(out), "--no-progress",
                 "--no-download", "--batch-size", "64", "--record-every", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "report.html" in captured.err.splitlines()[-1]  # listed as written
    assert "parameters: 269,322" in captured.err and "parameters:" not in captured.out  # the summary: stderr
    results = json.loads((out / "results.json").read_text())
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    pngs = check_self_contained(page)
    assert len(pngs) == 4  # curves, learning rate, confusion matrix, per-layer gradient norms
    assert all(len(p) > 5_000 for p in pngs)
    cell = page.cells["test_accuracy"]
    assert float(cell["value"]) == results["test_accuracy"]
    assert cell["text"] == f"{results['test_accuracy']:.4g}"
    assert float(page.cells["test_loss"]["value"]) == results["test_loss"]
    epochs = len((out / "history.jsonl").read_text().splitlines())
    assert page.rows["epochs"] == epochs == results["epochs"] == 2
    assert "Dense(256)" in page.pre and "parameters: 269,322" in page.pre


def test_report_from_python_without_lr_or_steps(tmp_path):
    history = History([{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5 + 0.1 * e} for e in (1, 2, 3)])
    conf = np.array([[5, 1], [2, 4]])
    path = write_report(tmp_path / "sub" / "r.html", history, {"accuracy": 0.75, "loss": 0.5, "confusion": conf},
                        settings={"note": "<script>alert(1)</script>"}, class_names=["a", "b"], title="t & u")
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert len(check_self_contained(page)) == 2  # curves and confusion; no lr, no per-step records
    assert page.rows["epochs"] == 3 and page.cells["accuracy"]["text"] == "0.75"
    assert "<script>" not in text and "&lt;script&gt;" in text and "<title>t &amp; u</title>" in text


def test_report_without_matplotlib_keeps_the_tables(monkeypatch):
    def missing():
        raise ImportError(plot.INSTALL_HINT)

    monkeypatch.setattr(plot, "_matplotlib", missing)
    history = History([{"epoch": 1, "train_loss": 0.3, "lr": 0.1}])
    text = html_report(history, {"test_accuracy": 0.9, "confusion": np.eye(2, dtype=int)})
    page = Page(text)
    assert page.images == [] and page.rows["epochs"] == 1 and page.cells["test_accuracy"]["value"] == "0.9"
    assert text.count("no plot: fnn.plot needs matplotlib") == 3


@pytest.mark.parametrize("records", [[], [{"epoch": 1}]])
def test_report_of_an_empty_or_sparse_history(records):
    page = Page(html_report(History(records), {}))
    assert page.rows.get("epochs", 0) == len(records)
    check_self_contained(page)
