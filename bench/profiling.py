"""Sampling profiles of a running sidecar with py-spy, and their top entries.

``Recorder`` attaches ``py-spy record`` (raw "collapsed stack" output) to a process for the length
of one benchmark run; ``top_entries`` reads such files and says where the event loop's thread
spent its samples: by function itself ("self", C code it calls included, since py-spy is run
without ``--native``) and including what it calls ("total"). Samples of threads that were only
waiting (the loop in ``select``, the watchdog thread sleeping) are left out, so the percentages
are shares of the busy time.

Usage: ``python bench/profiling.py FILE... [--top 20]`` prints the top entries of saved profiles.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: leaf frames of a thread that waits rather than works
IDLE_LEAVES = ("select (selectors.py", ".wait (threading.py")
#: a frame's line number, dropped so a function's lines add up
_LINE = re.compile(r":\d+\)$")


def find_py_spy() -> str | None:
    """The py-spy next to this Python (the project's dev dependency), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recorder:
    """One ``py-spy record`` attached to ``pid`` until :meth:`stop`; writes ``output``."""

    def __init__(self, py_spy: str, pid: int, output: Path, *, rate: int = 100) -> None:
        self.output = output
        self._child = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        """Stop sampling and wait until the profile is written; raises RuntimeError with
        py-spy's message when it failed (e.g. no permission to attach)."""
        if self._child.poll() is None:
            self._child.send_signal(signal.SIGINT)
        try:
            _, errors = self._child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._child.kill()
            _, errors = self._child.communicate()
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {errors.decode(errors='replace').strip()}")


@dataclass(frozen=True)
class Profile:
    """Sample counts per function: ``busy`` samples in all, ``own`` where the function was
    running itself, ``within`` where it was on the stack."""

    busy: int
    own: Counter[str]
    within: Counter[str]


def read_profiles(paths: Iterable[Path]) -> Profile:
    """Add up py-spy raw files (one stack per line: ``frame;frame;... count``)."""
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    busy = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            frames = [_LINE.sub(")", frame) for frame in stack.split(";") if "(" in frame]
            if not frames or any(idle in frames[-1] for idle in IDLE_LEAVES):
                continue
            count = int(count_text)
            busy += count
            own[frames[-1]] += count
            for frame in set(frames):
                within[frame] += count
    return Profile(busy, own, within)


def top_entries(profile: Profile, count: int = 15) -> str:
    """The ``count`` functions with the most samples of their own, and with the most in all,
    as percentages of the busy samples."""
    if not profile.busy:
        return "no busy samples"

    def listing(counter: Counter[str]) -> list[str]:
        return [f"  {100 * hits / profile.busy:5.1f} %  {name}" for name, hits in counter.most_common(count)]

    # frames every stack has (the loop's own run_forever...) say nothing: shown only when below 95 %
    within = Counter({name: hits for name, hits in profile.within.items() if hits < 0.95 * profile.busy})
    return "\n".join(
        [
            f"{profile.busy} busy samples",
            "self (the function's own code and the C code it calls):",
            *listing(profile.own),
            "total (including the Python functions it calls):",
            *listing(within),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Top entries of py-spy raw profiles.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    print(top_entries(read_profiles(args.files), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
