"""Token sampling: llama.cpp's default sampler chain, in its order.

common/common.h `samplers`: penalties -> (dry, top-n-sigma, typical: off by
default, not implemented) -> top-k -> top-p -> min-p -> (xtc: off) ->
temperature -> dist. temp <= 0 is greedy after penalties, as common/sampling.cpp.
Each step works on a candidate set (ids, logits) like llama_token_data_array.
"""
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingParams:
    temp: float = 0.8
    top_k: int = 40             # <= 0: whole vocabulary
    top_p: float = 0.95         # 1.0: off
    min_p: float = 0.05         # 0.0: off
    repeat_penalty: float = 1.0  # 1.0: off
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64    # tokens of history the penalties look at
    seed: int | None = None     # None: a fresh random seed

    def validate(self):
        if self.top_p <= 0 or self.top_p > 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p < 0 or self.min_p > 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.penalty_last_n < -1:
            raise ValueError(f"penalty_last_n must be >= -1, got {self.penalty_last_n}")


class Sampler:
    """Samples one token id from a logits row; remembers the tokens it is shown."""

    def __init__(self, params: SamplingParams, n_ctx: int):
        params.validate()
        self.params = params
        last_n = n_ctx if params.penalty_last_n == -1 else params.penalty_last_n
        self.history = deque(maxlen=max(last_n, 0))
        self.rng = np.random.default_rng(params.seed)

    def accept(self, token_id: int):
        """Record a token (prompt or generated) for the repetition penalties."""
        if self.history.maxlen:
            self.history.append(int(token_id))

    def sample(self, logits: np.ndarray) -> int:
        values = self._penalize(logits.astype(np.float32, copy=True))
        p = self.params
        if p.temp <= 0:
            return int(np.argmax(values))
        ids, values = top_k(None, values, p.top_k)
        ids, values = top_p(ids, values, p.top_p)
        ids, values = min_p(ids, values, p.min_p)
        probs = softmax(values / np.float32(p.temp))
        return int(ids[self.rng.choice(len(ids), p=probs)])

    def _penalize(self, logits):
        """llama-sampler.cpp llama_sampler_penalties_apply: divide positive logits
        (multiply negative ones) by the repeat penalty, subtract count * frequency
        and presence penalties, for each token seen in the last n."""
        p = self.params
        if not self.history or (p.repeat_penalty == 1 and not p.frequency_penalty
                                and not p.presence_penalty):
            return logits
        for token_id, count in Counter(self.history).items():
            v = logits[token_id]
            v = v * p.repeat_penalty if v <= 0 else v / p.repeat_penalty
            logits[token_id] = v - count * p.frequency_penalty - p.presence_penalty
        return logits


def softmax(values: np.ndarray) -> np.ndarray:
    e = np.exp(values.astype(np.float64) - values.max())
    return e / e.sum()


def _sorted_desc(ids, values):
    order = np.argsort(-values, kind="stable")
    return ids[order], values[order]


def top_k(ids, values, k):
    """The k largest values and their ids (None: the positions), sorted descending;
    ties at the k-th value keep the lower ids. Over a vocabulary it allocates one
    float copy and a mask (gemma3's 262144 logits: ~1.3 MB, where argpartition's int64
    indices and an arange took 6 MB a token, which stayed in the process's heap)."""
    if k <= 0 or k >= len(values):
        return _sorted_desc(np.arange(len(values)) if ids is None else ids, values)
    kth = np.partition(values, len(values) - k)[len(values) - k]
    candidates = np.flatnonzero(values >= kth)  # k of them, more on ties
    order = np.argsort(-values[candidates], kind="stable")[:k]
    chosen = candidates[order]
    return (chosen if ids is None else ids[chosen]), values[chosen]


def top_p(ids, values, p):
    """Keep the most likely tokens until their probability reaches p (the one that
    crosses p is kept), as llama_sampler_top_p_apply. Input sorted descending."""
    if p >= 1.0:
        return ids, values
    cumulative = np.cumsum(softmax(values))
    keep = int(np.searchsorted(cumulative, p) + 1)
    return ids[:keep], values[:keep]


def min_p(ids, values, p):
    """Keep tokens with probability >= p * p_max, i.e. logit >= max + log(p)."""
    if p <= 0.0:
        return ids, values
    keep = values >= values.max() + np.float32(np.log(p))
    return ids[keep], values[keep]


def top_logprobs(logits: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The n most likely token ids with their log-probabilities."""
    shifted = logits.astype(np.float64) - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    best = np.argsort(-logprobs, kind="stable")[:n]
    return [(int(i), float(logprobs[i])) for i in best]
