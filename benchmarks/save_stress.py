"""Stress the durability of model saves: random kills, and concurrent writers and readers.

    .venv/bin/python benchmarks/save_stress.py --kills 200 --seconds 60

1. Saves over an existing model (with its AnnData, alternating two new models) are
   SIGKILLed at a random moment of their run until ``--kills`` of them died mid-way; after
   each, the directory must load as a whole model (the old one or the new one, every weight
   of one save, the AnnData matching), no staging folder may survive the load, and a file of
   the user's beside the model must be untouched. (The commit comes late in a save, so most
   random kills keep the old model; tests/model/test_save_durability.py kills at every step.)
2. Two writers save their own models into one folder while two readers load it, for
   ``--seconds``; every load must return a whole model.

Counts and failures are printed; the exit code is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _save_faults import (  # noqa: E402
    identify,
    kill_after,
    marked_model,
    run_in_child,
    staging_left,
    user_files,
)


def random_kills(directory: Path, n_kills: int, seed: int) -> Counter:
    """Kill ``n_kills`` overwriting saves at random moments; count what each left."""
    old, new = marked_model(1), {2: marked_model(2), 3: marked_model(3)}
    old.save(directory, save_anndata=True)
    (directory / "notes.txt").write_text("the user's notes")
    start = time.monotonic()
    run_in_child(lambda: new[2].save(directory, overwrite=True, save_anndata=True))
    duration = time.monotonic() - start
    outcomes: Counter = Counter()
    held = 1  # the marker of the model the directory holds before each save
    rng = random.Random(seed)
    longest, kills = duration, 0
    while kills < n_kills:
        target = 3 if held == 2 else 2  # always a different model than the one held
        model = new[target]
        killed = kill_after(
            lambda m=model: m.save(directory, overwrite=True, save_anndata=True),
            rng.uniform(0, longest),
        )
        kills += killed
        # Saves that finish before the kill shorten the window, so kills land mid-save.
        longest = longest if killed else 0.98 * longest
        try:
            marker, has_adata = identify(directory)
            whole = has_adata and not staging_left(directory)
            kept = user_files(directory) == {"notes.txt": b"the user's notes"}
            known = {held: "old", target: "new"}.get(marker)
            outcome = known if whole and kept and known else "BROKEN"
            held = marker
        except Exception as error:  # noqa: BLE001 - any failure to load counts as broken
            outcome = f"BROKEN ({type(error).__name__}: {error})"
        outcomes[(outcome, "killed" if killed else "finished first")] += 1
    return outcomes


def concurrent(directory: Path, seconds: float) -> dict[str, int]:
    """Two writers and two readers on one folder; the loads and saves each managed."""
    marked_model(1).save(directory, save_anndata=True)
    deadline = time.monotonic() + seconds
    read_end, write_end = os.pipe()
    children = []
    for role, marker in (("save", 2), ("save", 3), ("load", None), ("load", None)):
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            done = failed = 0
            model = marked_model(marker) if marker else None
            while time.monotonic() < deadline:
                try:
                    if model is not None:
                        model.save(directory, overwrite=True, save_anndata=True)
                    else:
                        identify(directory)
                    done += 1
                except Exception:  # noqa: BLE001
                    failed += 1
            os.write(write_end, f"{role} {done} {failed}\n".encode())
            os._exit(0)
        children.append(pid)
    os.close(write_end)
    for pid in children:
        os.waitpid(pid, 0)
    totals = Counter()
    with os.fdopen(read_end) as lines:
        for line in lines:
            role, done, failed = line.split()
            totals[f"{role}s"] += int(done)
            totals[f"failed {role}s"] += int(failed)
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        outcomes = random_kills(Path(root) / "kills", args.kills, args.seed)
        print(f"Saves over an existing model, SIGKILLed at random moments ({args.kills} kills):")
        for (outcome, how), count in sorted(outcomes.items()):
            print(f"  {count:4d}  {how:15s} -> loads as {outcome}")
        totals = concurrent(Path(root) / "shared", args.seconds)
        print(f"2 writers and 2 readers on one folder for {args.seconds:.0f} s: {totals}")
    broken = sum(n for (outcome, _), n in outcomes.items() if outcome.startswith("BROKEN"))
    failed = totals.get("failed saves", 0) + totals.get("failed loads", 0)
    print("PASS" if broken == failed == 0 else f"FAIL: {broken} broken, {failed} failed")
    sys.exit(1 if broken or failed else 0)


if __name__ == "__main__":
    main()
