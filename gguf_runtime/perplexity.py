"""Perplexity as llama-perplexity computes it (tools/perplexity/perplexity.cpp).

The text is tokenized once (BOS added if the model adds one); it is cut into
chunks of n_ctx tokens, each evaluated from an empty cache with its first token
replaced by BOS when the model adds one; the last n_ctx/2 - 1 predictions of each
chunk are scored. Output: `[1]x,[2]y,...` on stdout after each chunk, then
`Final estimate: PPL = X +/- Y` on stderr, as llama-perplexity prints them.
"""
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from .errors import ModelError


@dataclass
class PerplexityResult:
    ppl: float
    error: float
    n_chunks: int
    n_scored: int
    chunk_ppls: list


def negative_log_likelihoods(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits[i])[targets[i]] per row, in float64."""
    values = logits.astype(np.float64)
    peak = values.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(values - peak).sum(axis=1)) + peak[:, 0]
    return log_sum - values[np.arange(len(targets)), targets]


def perplexity(model, text: str, n_ctx: int = 512, n_chunks: int = -1, n_batch: int = 512,
               out=sys.stdout, progress=sys.stderr, cancel=None) -> PerplexityResult:
    tok = model.tokenizer
    tokens = np.asarray(model.tokenize(text, add_special=True, parse_special=False), np.int32)
    if len(tokens) < 2 * n_ctx:
        raise ModelError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a "
                         f"context of {n_ctx}; the text has {len(tokens)}")
    if n_ctx > model.n_ctx:
        raise ModelError(f"-c {n_ctx} exceeds the model's context {model.n_ctx}")
    n_batch = min(n_batch, n_ctx, model.transformer.n_batch)
    available = len(tokens) // n_ctx
    n_chunks = available if n_chunks < 0 else min(n_chunks, available)
    first = n_ctx // 2
    nll_sum = nll2_sum = 0.0
    count = 0
    chunk_ppls = []
    if progress:
        print(f"perplexity: {len(tokens)} tokens, {n_chunks} chunks of {n_ctx}, "
              f"batch {n_batch}", file=progress, flush=True)
    for chunk in range(n_chunks):
        started = time.perf_counter()
        ids = tokens[chunk * n_ctx:(chunk + 1) * n_ctx].copy()
        if tok.add_bos:
            ids[0] = tok.bos_id
        nll = _score_chunk(model, ids, first, n_batch, cancel)
        nll_sum += float(nll.sum())
        nll2_sum += float((nll * nll).sum())
        count += len(nll)
        chunk_ppls.append(math.exp(nll_sum / count))
        if out:
            print(f"[{chunk + 1}]{chunk_ppls[-1]:.4f},", end="", file=out, flush=True)
        if progress and chunk == 0:
            eta = (time.perf_counter() - started) * n_chunks / 60
            print(f"perplexity: {time.perf_counter() - started:.2f} seconds per pass - "
                  f"ETA {eta:.2f} minutes", file=progress, flush=True)
    mean = nll_sum / count
    var = nll2_sum / count - mean * mean
    ppl = math.exp(mean)
    error = math.sqrt(var / (count - 1)) * ppl if var > 0 and count > 1 else 0.0
    if out:
        print(file=out, flush=True)
    if progress:
        print(f"Final estimate: PPL = {ppl:.4f} +/- {error:.5f}", file=progress, flush=True)
    return PerplexityResult(ppl, error, n_chunks, count, chunk_ppls)


def _score_chunk(model, ids, first, n_batch, cancel):
    """NLL of ids[first+1:], each given the chunk before it, from an empty cache."""
    transformer = model.transformer
    nll = []
    with model.lock:
        model._reset()
        for start in range(0, len(ids), n_batch):
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            batch = ids[start:start + n_batch]
            keep_from = max(0, first - start)
            if keep_from >= len(batch):
                transformer.forward(batch, start, logits_for="last")
                continue
            logits = transformer.forward(batch, start, logits_for=keep_from)
            # row i is position start + keep_from + i; it predicts the next token
            positions = np.arange(start + keep_from, start + len(batch))
            has_target = positions + 1 < len(ids)
            nll.append(negative_log_likelihoods(logits[has_target],
                                                ids[positions[has_target] + 1]))
        model._reset()
    return np.concatenate(nll)
