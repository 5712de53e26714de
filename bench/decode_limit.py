"""The decode-only limit: how many monitoring points per CPU-second one core turns from request
bodies into validated points with the sidecar's own intake decoder, and nothing else (no HTTP,
metrics or plugins). No intake can beat it; the benchmark shows how far the sidecar is from it.

Usage: ``python bench/decode_limit.py [--points 100]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from luna_sidecar.config import SidecarConfig
from luna_sidecar.intake.point_decoding import PointDecoder


def decode_limit(body: bytes, *, slices: int = 5, slice_seconds: float = 0.2) -> float:
    """Points per CPU-second (of this thread) the intake's decoder achieves on ``body``: the best of
    ``slices`` slices of about ``slice_seconds`` each, so a slice disturbed by other work on the
    machine does not count."""
    decode = PointDecoder(max_items=SidecarConfig().max_batch_items).decode
    count = len(decode(body))  # also warms up and checks the body
    best = 0.0
    for _ in range(slices):
        decoded = 0
        started = time.thread_time()
        spent = 0.0
        while spent < slice_seconds:
            for _ in range(20):
                decode(body)
            decoded += 20 * count
            spent = time.thread_time() - started
        best = max(best, decoded / spent)
    return best


def main(argv: list[str] | None = None) -> int:
    from run import make_body  # the benchmark's own body, when run from the bench folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100, help="points per batch (default 100)")
    args = parser.parse_args(argv)
    rate = decode_limit(make_body(args.points))
    print(f"decode-only limit: {rate:,.0f} points per CPU-second ({args.points}-point batches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
