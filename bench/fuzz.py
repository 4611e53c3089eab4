"""Fuzz Model.load and a forward pass with many mutated files; report outcomes.

Cases are derived from a seed number: a tiny llama or gemma3 model (with a
vocabulary, Q8_0 weights) mutated by byte flips, an extreme value written over
a field, or truncation, as tests/fuzz/test_model_fuzz.py does. A worker process
runs the cases in turn; the parent watches it, so a crash (the worker dies) or
a hang (no answer within --timeout seconds) is recorded, its input saved to
tests/fuzz/corpus/, and a new worker continues. Any exception other than
GGUFError/ModelError is recorded as "other" and saved too.

    python bench/fuzz.py [-n 100000] [--timeout 10]
"""
import argparse
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path[:0] = [str(ROOT)]
sys.path.append(str(ROOT / "tests" / "helpers"))
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def make_case(seeds, number):
    from fuzz_harness import HUGE, flip_bytes, put_huge
    rng = random.Random(number)
    seed = seeds[rng.randrange(len(seeds))]
    kind = rng.choice(["flip", "flip", "huge", "truncate"])
    if kind == "flip":
        flips = [(rng.randrange(len(seed)), rng.randrange(256)) for _ in range(rng.randint(1, 8))]
        return flip_bytes(seed, flips)
    if kind == "huge":
        return put_huge(seed, rng.randrange(len(seed)), rng.choice(HUGE), rng.random() < 0.5)
    return seed[:rng.randrange(len(seed))]


def seed_files(work: Path):
    from gguf import GGMLQuantizationType as T
    from tiny_models import write_gguf
    seeds = []
    for arch in ("llama", "gemma3"):
        path = work / f"seed-{arch}.gguf"
        write_gguf(arch, path, vocab=True, qtype=T.Q8_0)
        seeds.append(path.read_bytes())
    return seeds


def worker(start, count, work: Path):
    """Run cases start.. and print 'case outcome seconds' per case."""
    from fuzz_harness import load_and_run
    seeds = [p.read_bytes() for p in sorted(work.glob("seed-*.gguf"))]
    path = work / "case.gguf"
    for number in range(start, start + count):
        path.write_bytes(make_case(seeds, number))
        t = time.perf_counter()
        try:
            outcome = load_and_run(path)
        except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
            outcome = f"other:{type(e).__name__}"
        print(number, outcome, f"{time.perf_counter() - t:.4f}", flush=True)


def run(n, timeout, work):
    seeds = seed_files(work)
    outcomes, slowest, failures = Counter(), (0.0, None), []
    number = 0
    while number < n:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(number), str(n - number),
                                 "--work", str(work)], stdout=subprocess.PIPE, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        while number < n:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                proc.kill()
                outcomes["hang"] += 1
                failures.append((number, "hang"))
                number += 1
                break
            if line is None:  # the worker died on case `number`
                proc.wait()
                outcomes["crash"] += 1
                failures.append((number, f"crash (exit {proc.returncode})"))
                number += 1
                break
            case, outcome, seconds = line.split()
            outcomes[outcome] += 1
            if outcome.startswith("other"):
                failures.append((int(case), outcome))
            if float(seconds) > slowest[0]:
                slowest = (float(seconds), int(case))
            number = int(case) + 1
            if number % 10000 == 0:
                print(f"{number} cases: {dict(outcomes)}", file=sys.stderr, flush=True)
        proc.kill()
    CORPUS.mkdir(parents=True, exist_ok=True)
    for case, what in failures:
        (CORPUS / f"case-{case}.gguf").write_bytes(make_case(seeds, case))
    return outcomes, slowest, failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--worker", nargs=2, type=int)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker, args.work)
    import tempfile
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        outcomes, slowest, failures = run(args.n, args.timeout, Path(work))
    print(f"# bench/fuzz.py: {args.n} cases in {time.perf_counter() - started:.0f} s")
    print("| outcome | cases |\n|---|---:|")
    for outcome in ("ok", "GGUFError", "ModelError", "crash", "hang"):
        print(f"| {outcome} | {outcomes.get(outcome, 0)} |")
    other = sum(v for k, v in outcomes.items() if k.startswith("other"))
    print(f"| other exception | {other} |")
    print(f"\nslowest case: #{slowest[1]} in {slowest[0]:.3f} s")
    for case, what in failures[:20]:
        print(f"failure: case {case}: {what} (saved to tests/fuzz/corpus/case-{case}.gguf)")


if __name__ == "__main__":
    main()
