"""Computing an importance matrix as llama-imatrix does (tools/imatrix/imatrix.cpp).

The text is tokenized once (BOS added if the model adds one, special tokens as
text); it is cut into chunks of n_ctx tokens, each run from an empty cache with its
first token replaced by BOS (compute_imatrix). Every matmul of a weight named
blk.* reports its f32 input x [n_tokens, n_in] (IMatrixCollector::collect_imatrix:
output.weight and the embedding lookup are left out); per weight we add x^2 per
column into an f32 sum, row after row as ggml does, and count the rows.
"""
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numba import njit

from .errors import ModelError
from .imatrix import ImatrixStats, write_dat, write_gguf
from .weights import Matrix


@njit(cache=True, nogil=True)
def add_squares(x, acc):
    """acc[j] += x[i, j]^2 for each row i in order, in f32 (collect_imatrix)."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            acc[j] += x[i, j] * x[i, j]


class Collector:
    """The observer Matrix.matmul calls: sums of squares and row counts per weight."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def __call__(self, matrix, x):
        acc = self.sums.get(matrix.name)
        if acc is None:
            acc = self.sums[matrix.name] = np.zeros(x.shape[1], np.float32)
            self.counts[matrix.name] = 0
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != acc.shape[0]:
            raise ModelError(f"imatrix: input of '{matrix.name}' has shape {x.shape}, "
                             f"expected [n, {acc.shape[0]}] f32")
        add_squares(x, acc)
        self.counts[matrix.name] += x.shape[0]


@contextmanager
def observing(transformer, collector):
    """Attach collector to every blk.* weight matrix for the duration of the block."""
    matrices = [m for layer in transformer.weights.layers for m in vars(layer).values()
                if isinstance(m, Matrix) and m.name.startswith("blk.")]
    for m in matrices:
        m.observer = collector
    plans = transformer.decode_plans  # decode_layers calls kernels past the observers
    transformer.decode_plans = [None] * len(plans)
    try:
        yield
    finally:
        for m in matrices:
            m.observer = None
        transformer.decode_plans = plans


def read_text(path) -> str:
    """The file's text as llama.cpp's -f reads it: bytes as they are (no newline
    translation), one trailing newline dropped (common/arg.cpp)."""
    with open(path, encoding="utf-8", newline="") as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise ModelError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return text[:-1] if text.endswith("\n") else text


def compute_imatrix(model, text: str, n_ctx: int = 512, n_chunks: int = -1,
                    dataset: str = "", progress=sys.stderr) -> ImatrixStats:
    """Sums and counts over the first n_chunks chunks of n_ctx tokens (all if < 0)."""
    tok = model.tokenizer
    tokens = np.asarray(model.tokenize(text, add_special=True, parse_special=False), np.int32)
    if n_ctx > model.n_ctx:
        raise ModelError(f"-c {n_ctx} exceeds the model's context {model.n_ctx}")
    if len(tokens) < 2 * n_ctx:
        raise ModelError(f"you need at least {2 * n_ctx} tokens for a context of {n_ctx}; "
                         f"the text has {len(tokens)}")
    available = len(tokens) // n_ctx
    n_chunks = available if n_chunks < 0 else min(n_chunks, available)
    if n_chunks == 0:
        raise ModelError("--chunks 0: nothing to compute")
    _report(progress, f"imatrix: {len(tokens)} tokens, computing over {n_chunks} chunks, "
                      f"n_ctx={n_ctx}")
    collector = Collector()
    started = time.perf_counter()
    with model.lock, observing(model.transformer, collector):
        for chunk in range(n_chunks):
            ids = tokens[chunk * n_ctx:(chunk + 1) * n_ctx].copy()
            if tok.add_bos:
                ids[0] = tok.bos_id
            _run_chunk(model, ids)
            _report_chunk(progress, chunk + 1, n_chunks, time.perf_counter() - started)
        model._reset()
    stats = ImatrixStats(datasets=[dataset] if dataset else [], chunk_count=n_chunks,
                         chunk_size=n_ctx)
    for name in sorted(collector.sums):
        stats.sums[name] = collector.sums[name].reshape(1, -1)
        stats.counts[name] = np.array([collector.counts[name]], np.int64)
    return stats


def _run_chunk(model, ids):
    """One chunk from an empty cache, in batches the transformer holds."""
    transformer = model.transformer
    model._reset()
    for start in range(0, len(ids), transformer.n_batch):
        transformer.forward(ids[start:start + transformer.n_batch], start, logits_for="last")


def _report(progress, line):
    if progress:
        print(line, file=progress, flush=True)


def _report_chunk(progress, done, total, elapsed):
    per_chunk = elapsed / done
    left = per_chunk * (total - done)
    _report(progress, f"imatrix: chunk {done}/{total}, {per_chunk:.2f} s per chunk, "
                      f"ETA {int(left) // 60}:{int(left) % 60:02d}")


def run(model_path, text_path, out_path="imatrix.gguf", n_ctx=512, n_chunks=-1,
        output_format="gguf", quiet=False, n_threads=None):
    """gguf-imatrix: compute, then write OUT atomically (nothing under OUT on Ctrl-C)."""
    from . import threads
    from .model import Model
    text = read_text(text_path)
    if Path(out_path).is_dir():
        raise ModelError(f"{out_path}: is a directory")
    progress = None if quiet else sys.stderr
    with Model.load(model_path, n_ctx=n_ctx, n_threads=n_threads) as model:
        threads.apply(model.n_threads)
        stats = compute_imatrix(model, text, n_ctx, n_chunks, dataset=str(text_path),
                                progress=progress)
    (write_dat if output_format == "dat" else write_gguf)(stats, out_path)
    _report(progress, f"imatrix: {len(stats.sums)} entries after {stats.chunk_count} chunks "
                      f"written to {out_path}")
    return stats
