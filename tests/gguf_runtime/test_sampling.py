"""The sampler chain, step by step, against hand computations."""
import numpy as np
import pytest

from gguf_runtime.sampling import (Sampler, SamplingParams, min_p, softmax, top_k,
                                   top_logprobs, top_p)


def test_greedy_is_argmax():
    logits = np.array([0.1, 3.0, -1.0, 2.9], np.float32)
    assert Sampler(SamplingParams(temp=0), 64).sample(logits) == 1


def test_top_k_keeps_k_largest_sorted():
    ids, values = top_k(np.arange(6), np.array([1, 5, 3, 4, 0, 2], np.float32), 3)
    assert ids.tolist() == [1, 3, 2] and values.tolist() == [5, 4, 3]


@pytest.mark.parametrize("k", [1, 40, 1000])
def test_top_k_over_a_vocabulary_equals_a_full_sort(k):
    rng = np.random.default_rng(k)
    values = np.round(rng.standard_normal(262144), 2).astype(np.float32)  # many ties
    order = np.argsort(-values, kind="stable")[:k]  # ties: lower ids first
    ids, kept = top_k(None, values, k)
    assert ids.tolist() == order.tolist() and np.array_equal(kept, values[order])
    ids, _ = top_k(np.arange(262144) + 7, values, k)
    assert ids.tolist() == (order + 7).tolist()


def test_top_p_keeps_the_token_that_crosses_p():
    values = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    ids, _ = top_p(np.arange(4), values, 0.75)
    assert ids.tolist() == [0, 1]           # 0.5 + 0.3 crosses 0.75
    ids, _ = top_p(np.arange(4), values, 0.85)
    assert ids.tolist() == [0, 1, 2]


def test_min_p_is_relative_to_the_best():
    values = np.log(np.array([0.5, 0.3, 0.04, 0.16]))
    ids, _ = min_p(np.arange(4), values, 0.1)  # keep p >= 0.05
    assert ids.tolist() == [0, 1, 3]


def test_penalties_as_llama_cpp():
    params = SamplingParams(temp=0, repeat_penalty=2.0, frequency_penalty=0.5,
                            presence_penalty=0.25)
    sampler = Sampler(params, 64)
    for t in (0, 0, 1):
        sampler.accept(t)
    logits = np.array([4.0, -1.0, 3.5], np.float32)
    penalized = sampler._penalize(logits.copy())
    assert penalized.tolist() == [4 / 2 - 2 * 0.5 - 0.25, -1 * 2 - 0.5 - 0.25, 3.5]
    assert sampler.sample(logits) == 2


def test_penalty_window_forgets_old_tokens():
    sampler = Sampler(SamplingParams(temp=0, repeat_penalty=10.0, penalty_last_n=2), 64)
    for t in (0, 1, 2):
        sampler.accept(t)
    assert list(sampler.history) == [1, 2]


def test_seed_reproducible_and_distribution_follows_temperature():
    logits = np.array([2.0, 1.0, 0.0, -1.0], np.float32)
    params = SamplingParams(temp=0.7, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    draws = [Sampler(params, 64).sample(logits) for _ in range(3)]
    assert len(set(draws)) == 1
    sampler = Sampler(SamplingParams(temp=0.7, top_k=0, top_p=1.0, min_p=0.0, seed=1), 64)
    counts = np.bincount([sampler.sample(logits) for _ in range(20000)], minlength=4)
    expected = softmax(logits / 0.7) * 20000
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 16.3  # chi-square, 3 degrees of freedom, p = 0.001


def test_top_logprobs_normalized():
    logits = np.array([1.0, 2.0, 3.0], np.float32)
    best = top_logprobs(logits, 2)
    assert [i for i, _ in best] == [2, 1]
    assert np.isclose(sum(np.exp(lp) for _, lp in top_logprobs(logits, 3)), 1.0)


@pytest.mark.parametrize("bad", [dict(top_p=0.0), dict(min_p=2.0), dict(repeat_penalty=0)])
def test_bad_params_rejected(bad):
    with pytest.raises(ValueError):
        Sampler(SamplingParams(**bad), 64)
