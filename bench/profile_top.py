"""The top entries of a py-spy profile (`py-spy record --format raw`), restricted to the stacks through the intake's dispatcher (or other text).

    .venv/bin/py-spy record --gil -r 200 --format raw -o /tmp/intake.prof -- \
        .venv/bin/python bench/intake.py --integrations 300 --databases sqlite
    .venv/bin/python bench/profile_top.py /tmp/intake.prof --through Dispatcher.

`--gil` samples only the thread holding the GIL: the intake's CPU, not its threads waiting on sockets or locks.
Prints each function's share of the samples: self (on top of the stack) and inclusive (anywhere in it).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def top(path: Path, through: str) -> tuple[int, Counter[str], Counter[str]]:
    """Samples through ``through``, and per function (name and file) the self and inclusive counts."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if through not in stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return total, own, inclusive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy raw output")
    parser.add_argument("--through", default="Dispatcher.", help="keep the stacks that contain this text")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    total, own, inclusive = top(args.profile, args.through)
    if not total:
        raise SystemExit(f"no samples through {args.through}")
    print(f"{total} samples through {args.through}")
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"--- {title}")
        for frame, samples in counts.most_common(args.top):
            print(f"{samples / total:6.1%}  {frame.replace(str(Path.cwd()) + '/', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
