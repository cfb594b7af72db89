"""Run the tutorials and copy their figures into docs/img for the documentation site.

    python examples/tutorials/make_doc_figures.py [--only 03 05] [--quick]

Each tutorial runs in its own process at full size, with its figures written to a temporary
directory; they are then stored in docs/img as palette PNGs (256 colours, no dithering), which
keeps each under ~150 KB without visible change. The wall-clock and CPU time of each tutorial
is printed at the end. With --quick the tutorials run with --quick and only the times are
reported (docs/img is left alone).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMG = HERE.parent.parent / "docs" / "img"
LIMIT = 150_000


def compress(src: Path, dst: Path) -> int:
    from PIL import Image

    with Image.open(src) as im:
        palette = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                             dither=Image.Dither.NONE)
        palette.save(dst, optimize=True)
    return dst.stat().st_size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="tutorial numbers to run, e.g. 03 05")
    parser.add_argument("--quick", action="store_true", help="run the tutorials with --quick")
    args = parser.parse_args(argv)
    scripts = sorted(HERE.glob("[0-9][0-9]_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.name[:2] in args.only]
    IMG.mkdir(parents=True, exist_ok=True)
    times, too_big = {}, []
    for script in scripts:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, str(script), "--out", tmp] + (["--quick"] if args.quick else [])
            t0 = time.perf_counter()
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, check=True)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            times[script.name] = (time.perf_counter() - t0, cpu)
            if args.quick:
                continue
            for png in sorted(Path(tmp).glob("*.png")):
                size = compress(png, IMG / png.name)
                print(f"docs/img/{png.name}: {size / 1000:.0f} KB")
                if size > LIMIT:
                    too_big.append(png.name)
    print("\nrun times (wall clock, CPU):")
    for name, (wall, cpu) in times.items():
        print(f"  {name:28s} {wall:6.1f} s  {cpu:6.1f} s")
    if too_big:
        print(f"over {LIMIT // 1000} KB: {too_big}")
    return 1 if too_big else 0


if __name__ == "__main__":
    sys.exit(main())
