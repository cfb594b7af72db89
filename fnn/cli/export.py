"""``fnn export``: the parameters of a model trained by ``fnn train`` as a NumPy ``.npz`` file.

Keys are the parameters' paths in the tree (``params/0/w``, ``state/1/mean``), as written by
``fnn.checkpoint.save_npz``; the checkpoint's metadata (model, input shape, class names,
Standardizer statistics) goes to a JSON file next to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fnn.cli._args import _Exit, _log
from fnn.cli._trained import MODEL_FILE, load_trained

PROG = "fnn export"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fnn export`` to the subcommand parsers ``sub``."""
    p = sub.add_parser(
        "export", help="write the parameters of a model trained by fnn train to a .npz file",
        description="Write the parameters and state of a model trained by fnn train to a NumPy .npz file "
                    "keyed by their paths in the tree (params/0/w, ...), and its metadata to OUT.json.")
    p.add_argument("--checkpoint", type=Path, required=True, metavar="PATH",
                   help=f"a file written by fnn train ({MODEL_FILE} or checkpoint.fnn) or its --out directory")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the .npz file to write")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``fnn export``: returns the exit status."""
    from fnn.checkpoint import save_npz

    try:
        trained = load_trained(PROG, args.checkpoint)
    except _Exit as e:
        _log(str(e))
        return e.code
    path = save_npz(args.out, trained.params, trained.state)
    meta = {k: v for k, v in trained.metadata.items() if k not in ("history", "callbacks")}
    meta_path = path.with_name(path.name + ".json")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    _log(f"{PROG}: wrote {path} and {meta_path}")
    return 0
