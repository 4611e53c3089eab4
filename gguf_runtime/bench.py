"""gguf-bench: prompt processing and generation speed as llama-bench measures them.

Tests as llama-bench's (tools/llama-bench/llama-bench.cpp): `ppN` evaluates N
random tokens in batches of n_batch; `tgN` generates N tokens one per call; both
from an empty cache, or at depth D (`-d`, test `tgN @ dD`) after D random tokens,
untimed and kept for every repetition. One warm-up run, then r timed
repetitions; t/s is mean ± standard deviation of tokens / seconds over them.
Output: llama-bench's markdown table, or JSON with its field names.
"""
import json
import statistics
import time
from dataclasses import dataclass

import numpy as np

from .model import Model

N_BATCH = 512


@dataclass
class BenchResult:
    model_filename: str
    model_type: str
    model_size: int
    model_n_params: int
    n_threads: int
    n_prompt: int
    n_gen: int
    n_depth: int
    type_k: str
    type_v: str
    samples_ns: list

    @property
    def samples_ts(self):
        n = self.n_prompt + self.n_gen
        return [n * 1e9 / ns for ns in self.samples_ns]

    def as_json(self):
        ts = self.samples_ts
        return dict(model_filename=self.model_filename, model_type=self.model_type,
                    model_size=self.model_size, model_n_params=self.model_n_params,
                    n_batch=N_BATCH, n_ubatch=N_BATCH, n_threads=self.n_threads,
                    type_k=self.type_k, type_v=self.type_v, n_prompt=self.n_prompt,
                    n_gen=self.n_gen, n_depth=self.n_depth, avg_ns=int(statistics.mean(self.samples_ns)),
                    stddev_ns=int(_stdev(self.samples_ns)), avg_ts=statistics.mean(ts),
                    stddev_ts=_stdev(ts), samples_ns=self.samples_ns,
                    samples_ts=[round(v, 3) for v in ts])


def _stdev(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _model_facts(model):
    tensors = model.file.tensors
    size = sum(t.nbytes for t in tensors)
    params = sum(int(np.prod(t.shape)) for t in tensors)
    ftype = max(tensors, key=lambda t: t.nbytes if t.name != "token_embd.weight" else 0).type
    label = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    return f"{model.transformer.cfg.arch} {label} {ftype.name}", size, params


def _fill(transformer, depth, rng, n_vocab):
    """The cache holding `depth` random tokens (llama-bench's n_depth): kept from the
    last fill when the cache can go back to it, else evaluated again."""
    if depth and transformer.truncate(depth) == depth:
        return
    transformer.truncate(0)
    ids = rng.integers(0, n_vocab, depth).astype(np.int32)
    for start in range(0, depth, N_BATCH):
        transformer.forward(ids[start:start + N_BATCH], start)


def _run_prompt(transformer, n_prompt, rng, n_vocab, depth):
    ids = rng.integers(0, n_vocab, n_prompt).astype(np.int32)
    for start in range(0, n_prompt, N_BATCH):
        transformer.forward(ids[start:start + N_BATCH], depth + start)


def _run_gen(transformer, n_gen, rng, n_vocab, depth):
    token = np.array([rng.integers(0, n_vocab)], np.int32)
    for pos in range(depth, depth + n_gen):
        logits = transformer.forward(token, pos)
        token[0] = int(np.argmax(logits[0]))


def bench_model(path, n_prompt, n_gen, n_threads, repetitions, cache_type_k="f16",
                cache_type_v="f16", n_depth=0):
    """llama-bench's tests for one model: a pp result and a tg result (either may be 0)."""
    from . import threads
    results = []
    n_ctx = n_depth + max(n_prompt, n_gen, 16)
    with Model.load(path, n_ctx=n_ctx, n_threads=n_threads, cache_type_k=cache_type_k,
                    cache_type_v=cache_type_v) as model:
        threads.apply(model.n_threads)
        model_type, size, params = _model_facts(model)
        n_vocab = model.transformer.cfg.n_vocab
        rng = np.random.default_rng(0)
        for n_p, n_g, run in ((n_prompt, 0, _run_prompt), (0, n_gen, _run_gen)):
            count = n_p or n_g
            if not count:
                continue
            samples = []
            for rep in range(repetitions + 1):  # the first: warm-up
                _fill(model.transformer, n_depth, rng, n_vocab)
                start = time.perf_counter_ns()
                run(model.transformer, count, rng, n_vocab, n_depth)
                if rep:
                    samples.append(time.perf_counter_ns() - start)
            results.append(BenchResult(str(model.file.path), model_type, size, params,
                                       model.n_threads, n_p, n_g, n_depth, cache_type_k,
                                       cache_type_v, samples))
    return results


def markdown(results) -> str:
    head = ("| model                          |       size |     params | backend    | threads "
            "|            test |                  t/s |")
    rule = ("| ------------------------------ | ---------: | ---------: | ---------- | ------: "
            "| --------------: | -------------------: |")
    lines = [head, rule]
    for r in results:
        test = f"pp{r.n_prompt}" if r.n_prompt else f"tg{r.n_gen}"
        test += f" @ d{r.n_depth}" if r.n_depth else ""
        ts = r.samples_ts
        speed = f"{statistics.mean(ts):.2f} ± {_stdev(ts):.2f}"
        lines.append(f"| {r.model_type:<30} | {r.model_size / 2**20:>6.2f} MiB | "
                     f"{r.model_n_params / 1e6:>8.2f} M | {'CPU':<10} | {r.n_threads:>7} | "
                     f"{test:>15} | {speed:>20} |")
    return "\n".join(lines)


def to_json(results) -> str:
    return json.dumps([r.as_json() for r in results], indent=2)
