"""Random and malformed event-intake bodies, for fuzz-style tests of the intake's decoders.

``monitoring_bodies(rng, count)`` yields request bodies (bytes) of every kind the intake must
cope with: valid batches, batches with a wrong value somewhere (types, empty series, huge and
non-finite numbers, nulls, nesting), bodies that are not JSON at all (truncated, flipped bytes,
invalid UTF-8, lone surrogates, a byte-order mark, deep nesting) and random JSON values.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

_WORDS = ["requests", "errors", "handlers", "POST:/6/handlers", "GET:/x/{id}", "", "ü", "\x00", "a" * 300]
_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    200,
    1.5,
    -0.0,
    1e308,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**30,
]


def scalar(rng: random.Random) -> Any:
    """A JSON scalar, now and then an awkward one."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(_WORDS)
    if kind == 1:
        return rng.choice(_NUMBERS)
    if kind == 2:
        return rng.uniform(-1e6, 1e6)
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.randrange(-1000, 1000)
    return "".join(rng.choice("abc_:/{}") for _ in range(rng.randrange(1, 12)))


def value(rng: random.Random, depth: int = 0) -> Any:
    """Mostly scalars; sometimes a list or object (which tags and fields refuse)."""
    roll = rng.random()
    if depth < 2 and roll < 0.05:
        return [value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if depth < 2 and roll < 0.1:
        return {scalar_key(rng): value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return scalar(rng)


def scalar_key(rng: random.Random) -> str:
    return rng.choice(["service", "route", "status_code", "request_id", "execution_time", "k", "", "é"])


def values(rng: random.Random, good: bool) -> Any:
    """A tags or fields object: good ones hold strings and numbers only."""
    if not good and rng.random() < 0.2:
        return rng.choice([None, [], "tags", 5, True])
    chosen: dict[str, Any] = {}
    for _ in range(rng.randrange(5)):
        if good:
            chosen[scalar_key(rng)] = rng.choice(
                [rng.choice(_WORDS[:5]), rng.randrange(-5, 600), round(rng.uniform(0, 10), 6)]
            )
        else:
            chosen[scalar_key(rng)] = value(rng)
    return chosen


def point(rng: random.Random, good: bool) -> Any:
    if not good and rng.random() < 0.05:
        return value(rng)
    item: dict[str, Any] = {
        "series": rng.choice(["requests", "errors", "custom"]) if good else value(rng),
        "eventTime": rng.uniform(1.6e9, 1.8e9) if good or rng.random() < 0.5 else value(rng),
        "tags": values(rng, good or rng.random() < 0.5),
        "fields": values(rng, good or rng.random() < 0.5),
    }
    for key in list(item):
        if rng.random() < (0.02 if good and key in ("series", "eventTime") else 0.1):
            del item[key]
    if rng.random() < 0.1:
        item["extra"] = value(rng)
    return item


def batch(rng: random.Random, good: bool, max_points: int = 8) -> Any:
    if not good and rng.random() < 0.1:
        return rng.choice([value(rng), {"points": value(rng)}, {"events": []}, []])
    count = rng.randrange(max_points + 1)
    # a bad batch has one bad point at most, so the check that refuses it is the one under test
    bad_at = rng.randrange(count) if count and not good else -1
    return {"points": [point(rng, good=index != bad_at) for index in range(count)]}


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """Break the bytes of a body the way a faulty client could."""
    kind = rng.randrange(8)
    if kind == 0 and raw:
        return raw[: rng.randrange(len(raw))]  # truncated
    if kind == 1 and raw:
        at = rng.randrange(len(raw))
        return raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1 :]  # one byte changed
    if kind == 2:
        return b"\xef\xbb\xbf" + raw  # byte-order mark
    if kind == 3:
        return raw.replace(b'"requests"', b'"\\ud800"', 1)  # lone surrogate
    if kind == 4:
        return raw.replace(b'"requests"', b'"re\xffquests"', 1)  # invalid UTF-8
    if kind == 5:
        return b"[" * 5000 + b"]" * 5000  # deep nesting
    if kind == 6:
        return raw + rng.choice([b" x", b",", b"}", b"\n\n"])  # trailing content
    return raw.replace(b"1", rng.choice([b"NaN", b"Infinity", b"1e999", b"01", b"-"]), 1)


def monitoring_bodies(rng: random.Random, count: int) -> Iterator[bytes]:
    """``count`` bodies for ``POST /events/monitoring_event``: about a third valid, a third
    with one wrong value, a third not valid JSON."""
    for _ in range(count):
        roll = rng.random()
        raw = json.dumps(batch(rng, good=roll < 0.35), allow_nan=True).encode()
        yield mutate(rng, raw) if roll > 0.7 else raw
