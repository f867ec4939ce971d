"""Long fuzzing run over the suite's targets (tests/test_fuzz.py: same TARGETS, same mutate).

    python benchmarks/fuzz_long.py --minutes 10              # every target, time split evenly
    python benchmarks/fuzz_long.py --minutes 30 --target session --seed 5

Inputs are random bytes, the valid seeds mutated by `mutate`, and (most often) mutations of
earlier inputs, so damage accumulates. Any input that raises, exceeds the per-input time
limit (Hang) or the address-space limit (MemoryError) is saved as
tests/fuzz_regressions/<target>/<sha256 prefix>.bin, which test_fuzz.py replays in every
suite run. Prints per target: inputs run, inputs per second, distinct failures found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_fuzz import REGRESSION_DIR, TARGETS, mutate, run_target  # noqa: E402


def fuzz(name: str, seconds: float, rng: random.Random, save: bool) -> dict:
    seeds = TARGETS[name][1]
    pool: list[bytes] = list(seeds)
    runs = 0
    failures: dict[str, str] = {}  # signature -> saved file
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        roll = rng.random()
        if roll < 0.1:
            data = rng.randbytes(rng.randint(0, 1500))
        elif roll < 0.4:
            data = mutate(rng, rng.choice(seeds))
        else:
            data = mutate(rng, rng.choice(pool))
        runs += 1
        try:
            run_target(name, data)
        except Exception as exc:  # noqa: BLE001 - every escape is a finding
            tb = traceback.extract_tb(exc.__traceback__)
            where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "pcapexfil" in f.filename),
                         "?")
            sig = f"{type(exc).__name__} at {where}"
            if sig not in failures:
                path = REGRESSION_DIR / name / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
                if save:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                failures[sig] = str(path.relative_to(ROOT)) if save else "(not saved)"
                print(f"[{name}] {sig}: {exc!s:.200} -> {failures[sig]}", file=sys.stderr)
            continue
        if len(pool) < 2000 and rng.random() < 0.05:
            pool.append(data)
    return {"inputs": runs, "per_s": round(runs / seconds), "failures": failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--target", choices=sorted(TARGETS), action="append", help="default: all")
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    ap.add_argument("--memory-mb", type=int, default=2048, help="address-space limit (MemoryError is a finding)")
    ap.add_argument("--no-save", action="store_true", help="report failures without writing regression files")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    limit = args.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    targets = args.target or sorted(TARGETS)
    each = args.minutes * 60 / len(targets)
    rng = random.Random(seed)
    report = {"seed": seed, "seconds_per_target": round(each, 1)}
    for name in targets:
        report[name] = fuzz(name, each, rng, not args.no_save)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=2))
    if any(report[n]["failures"] for n in targets):
        sys.exit(1)


if __name__ == "__main__":
    main()
