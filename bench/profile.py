"""Where a decode token and a prefill batch spend their time, per kernel.

    python bench/profile.py -m smollm2-135m [-m other.gguf] [-p 512] [-n 64] [-t 2]

Wraps the calls the forward pass makes (matmuls by tensor role, norms, RoPE,
attention, the output layer) with a timer, runs one warm-up and then a pp and
a tg run, and prints ms per token (tg) and ms per batch (pp) per call kind with
the bytes the decode matmuls read (GB/s). One token runs a layer as one call
(decode.DecodeRun: one region for the layers), so the tg run is made twice: as it
runs, and with those plans off, each kernel called from Python (the per-kernel view;
its total includes the Python glue the region saves). The wrapper costs ~1 us a call, so
totals run a little above gguf-bench's.
"""
import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# gguf_runtime first: it sets OPENBLAS_THREAD_TIMEOUT, read when numpy loads OpenBLAS
from gguf_runtime import decode, flash_attention, layers, weights as wt  # noqa: E402
import numpy as np  # noqa: E402,I100
from gguf_runtime.model import Model  # noqa: E402

TIMES = collections.defaultdict(float)
CALLS = collections.Counter()
BYTES = collections.Counter()


def _timed(name, fn, nbytes=None):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        TIMES[name] += time.perf_counter() - t0
        CALLS[name] += 1
        if nbytes is not None:
            BYTES[name] += nbytes(*args)
        return result
    return wrapper


def _matrix_role(matrix):
    name = matrix.parts[0].name if isinstance(matrix, wt.FusedMatrix) else matrix.name
    role = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
    return "mm " + ("qkv" if isinstance(matrix, wt.FusedMatrix) and role == "attn_q"
                    else "gate_up" if isinstance(matrix, wt.FusedMatrix) else role)


def _matrix_bytes(matrix):
    fields = matrix.packed if matrix.packed is not None else (matrix.data,)
    return sum(f.nbytes for f in fields if isinstance(f, np.ndarray))


def _install():
    """Wrap the calls with timers; returns what to undo. Installed only after the
    model's kernels have compiled: a Numba function compiled with a wrapper in place
    of a kernel it calls would fail to type."""
    saved = [(cls, "matmul", cls.matmul) for cls in (wt.Matrix, wt.FusedMatrix)]
    saved += [(layers, name, getattr(layers, name)) for name in
              ("rms_norm", "rope", "residual_norm", "gated_activation", "attention_blas")]
    saved += [(flash_attention, "attention", flash_attention.attention),
              (wt.Weights, "embed", wt.Weights.embed), (decode.DecodeRun, "__call__",
                                                         decode.DecodeRun.__call__)]
    for owner, name, original in saved:
        if name == "matmul":
            setattr(owner, name, _timed_matmul(original))
        else:
            setattr(owner, name, _timed("decode layers" if name == "__call__" else name,
                                        original))
    return saved


def _timed_matmul(original):
    def matmul(self, x, out, *rest):
        t0 = time.perf_counter()
        original(self, x, out, *rest)
        role = _matrix_role(self)
        TIMES[role] += time.perf_counter() - t0
        CALLS[role] += 1
        BYTES[role] += _matrix_bytes(self)
    return matmul


def _report(title, seconds, per):
    total = sum(TIMES.values())
    print(f"\n{title}: {seconds * 1e3 / per:.2f} ms per {'token' if per > 1 else 'batch'}"
          f" (timed calls {total * 1e3 / per:.2f} ms)")
    print("| call | ms | share | calls | GB/s |\n|---|---:|---:|---:|---:|")
    for name, t in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        gbs = f"{BYTES[name] / t / 1e9:.1f}" if BYTES[name] and per > 1 else ""
        print(f"| {name} | {t * 1e3 / per:.3f} | {t / seconds:.0%} | {CALLS[name] // per} | {gbs} |")
    TIMES.clear(), CALLS.clear(), BYTES.clear()


def profile(path, n_prompt, n_gen, n_threads):
    model = Model.load(path, n_ctx=max(n_prompt, n_gen) + 8, n_threads=n_threads)
    t = model.transformer
    rng = np.random.default_rng(0)
    ids = rng.integers(0, t.cfg.n_vocab, n_prompt).astype(np.int32)
    plans = t.decode_plans
    for t.decode_plans in (plans, [None] * len(plans)):  # warm-up: compile and fault in
        t.truncate(0)
        t.forward(ids, 0)
        for pos in range(8):
            t.forward(ids[pos:pos + 1], n_prompt + pos)
    saved = _install()
    TIMES.clear(), CALLS.clear(), BYTES.clear()
    t.truncate(0)
    t0 = time.perf_counter()
    t.forward(ids, 0)
    _report(f"{os.path.basename(path)} pp{n_prompt}", time.perf_counter() - t0, 1)
    for label, t.decode_plans in (("", plans), (", layers kernel by kernel", [None] * len(plans))):
        t.truncate(0)
        token = np.array([ids[0]], np.int32)
        t0 = time.perf_counter()
        for pos in range(n_gen):
            token[0] = int(np.argmax(t.forward(token, pos)[0]))
        _report(f"{os.path.basename(path)} tg{n_gen}{label}", time.perf_counter() - t0, n_gen)
    for owner, name, original in saved:
        setattr(owner, name, original)
    model.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", required=True)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", type=int, default=None)
    args = ap.parse_args()
    for path in args.model:
        profile(path, args.p, args.n, args.t)


if __name__ == "__main__":
    main()
