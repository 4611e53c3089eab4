"""The public API desktop apps embed: Model.load, tokenize, logits, generate, chat.

A Model owns one memory-mapped file, one transformer with its preallocated run
state and KV cache, and the token ids that cache holds. Calls on one Model are
serialized by a lock, so worker threads may share it; separate Models share
nothing. Prompts run in batches of n_batch tokens and `cancel` is checked between
batches, so a cancel is seen within one batch and leaves the model usable.
"""
import threading
from dataclasses import dataclass, field

import numpy as np

from .errors import ModelError
from .sampling import Sampler, SamplingParams, top_logprobs
from .streaming import TextStream

N_BATCH = 512  # prompt tokens per forward call, as llama.cpp's default n_ubatch


class ContextFull(ModelError):
    """Generation reached n_ctx with context shift off."""


@dataclass
class GenerationResult:
    """What a generate/chat call did, for the caller's statistics."""
    n_prompt: int = 0
    n_reused: int = 0
    n_generated: int = 0
    stop_reason: str = ""  # "eos", "stop", "length", "context", "cancel"
    logprobs: list = field(default_factory=list)
    tokens: list = field(default_factory=list)  # the generated ids, in order


class Model:
    def __init__(self, gguf_file, n_ctx=None, n_threads=None, chat_template=None,
                 cache_type_k="f16", cache_type_v="f16"):
        from .tokenizer import Tokenizer
        from .transformer import Transformer
        from . import threads
        self.file = gguf_file
        self.n_threads = threads.configure(n_threads)
        self.tokenizer = Tokenizer.from_metadata(gguf_file.metadata)
        n_ctx_train = int(gguf_file.metadata.get(
            f"{gguf_file.metadata.get('general.architecture')}.context_length", 4096))
        self.n_ctx = min(n_ctx or 4096, n_ctx_train)
        self.transformer = Transformer(gguf_file, n_ctx=self.n_ctx, n_batch=N_BATCH,
                                       cache_type_k=cache_type_k, cache_type_v=cache_type_v)
        self.chat_template = chat_template or gguf_file.metadata.get("tokenizer.chat_template")
        self.tokens: list[int] = []   # ids whose keys/values the cache holds, in order
        self.last_logits = None
        self.lock = threading.RLock()
        self.last_result = GenerationResult()

    @classmethod
    def load(cls, path_or_name, **kwargs) -> "Model":
        from .pull import resolve_model
        from .reader import GGUFFile
        gguf_file = GGUFFile(resolve_model(path_or_name))
        try:
            return cls(gguf_file, **kwargs)
        except BaseException:
            gguf_file.close()
            raise

    def close(self):
        with self.lock:
            self.transformer = None
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- tokens -------------------------------------------------------------

    def tokenize(self, text: str, add_special=True, parse_special=False) -> list[int]:
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids) -> str:
        self._check_ids(ids)
        return self.tokenizer.decode(list(ids))

    def _check_ids(self, ids):
        n_vocab = self.tokenizer.n_vocab
        bad = [i for i in ids if not 0 <= int(i) < n_vocab]
        if bad:
            raise ModelError(f"token id {bad[0]} out of range [0, {n_vocab})")

    # --- evaluation ---------------------------------------------------------

    def logits(self, ids) -> np.ndarray:
        """Logits for every position of ids, from an empty context."""
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        if len(ids) > self.n_ctx:
            raise ModelError(f"{len(ids)} tokens do not fit the context of {self.n_ctx}")
        with self.lock:
            self._reset()
            rows = [self._eval(ids[i:i + N_BATCH], "all") for i in range(0, len(ids), N_BATCH)]
            return np.concatenate(rows) if rows else np.zeros((0, self.tokenizer.n_vocab),
                                                              np.float32)

    def _reset(self):
        self.transformer.truncate(0)
        self.tokens = []
        self.last_logits = None

    def _eval(self, ids, logits_for="last"):
        out = self.transformer.forward(np.asarray(ids, np.int32), len(self.tokens),
                                       logits_for=logits_for)
        self.tokens.extend(ids)
        self.last_logits = out[-1]
        return out

    def _ingest(self, ids, cancel=None) -> int:
        """Make the cache hold exactly `ids`, reusing the common prefix; returns
        how many were reused. Raises nothing on cancel: returns early instead."""
        n_common = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            n_common += 1
        if n_common == len(ids) and n_common:  # need fresh logits for the last one
            n_common -= 1
        n_common = self.transformer.truncate(n_common)
        self.tokens = self.tokens[:n_common]
        for i in range(n_common, len(ids), N_BATCH):
            if cancel is not None and cancel.is_set():
                return n_common
            self._eval(ids[i:i + N_BATCH])
        return n_common

    # --- generation ---------------------------------------------------------

    def generate(self, prompt: str, max_tokens: int = -1, *, stop=(), context_shift=False,
                 n_keep=0, n_logprobs=0, cancel=None, add_special=True, parse_special=True,
                 **sampling):
        """Yield text pieces continuing `prompt` (raw completion, as llama-completion:
        special-token text in the prompt is parsed, as there)."""
        ids = self.tokenize(prompt, add_special=add_special, parse_special=parse_special)
        yield from self.generate_from_ids(ids, max_tokens, stop=stop, context_shift=context_shift,
                                          n_keep=n_keep, n_logprobs=n_logprobs, cancel=cancel,
                                          **sampling)

    def chat(self, messages, max_tokens: int = -1, *, template_kwargs=None, **kwargs):
        """Yield the assistant's reply to OpenAI-shaped messages. The cache is kept
        across calls: the common prefix with the previous turn is not recomputed."""
        yield from self.generate_from_ids(self.chat_tokens(messages, template_kwargs),
                                          max_tokens, **kwargs)

    def chat_tokens(self, messages, template_kwargs=None, add_generation_prompt=True):
        """Render messages with the chat template; message text is tokenized with
        special parsing off, so typed control strings stay text. One BOS at most."""
        from .chat import render_segments
        if not self.chat_template:
            raise ModelError("this model has no chat template; pass chat_template= "
                             "(e.g. 'chatml', 'gemma', 'llama3' or a file) or use generate()")
        tok = self.tokenizer
        segments = render_segments(self.chat_template, messages,
                                   bos_token=tok.token_text(tok.bos_id) if tok.bos_id >= 0 else "",
                                   eos_token=tok.token_text(tok.eos_id) if tok.eos_id >= 0 else "",
                                   add_generation_prompt=add_generation_prompt,
                                   **(template_kwargs or {}))
        ids = []
        for text, is_message in segments:
            ids += tok.encode(text, add_special=False, parse_special=not is_message)
        if tok.add_bos and (not ids or ids[0] != tok.bos_id):
            ids.insert(0, tok.bos_id)
        return ids

    def generate_from_ids(self, ids, max_tokens=-1, *, stop=(), context_shift=False, n_keep=0,
                          n_logprobs=0, cancel=None, ignore_eos=False, **sampling):
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        params = SamplingParams(**sampling)
        with self.lock:
            from . import threads
            threads.apply(self.n_threads)
            result = self.last_result = GenerationResult(n_prompt=len(ids))
            if len(ids) >= self.n_ctx:
                raise ContextFull(f"the prompt has {len(ids)} tokens; the context holds "
                                  f"{self.n_ctx} (raise -c/n_ctx)")
            result.n_reused = self._ingest(ids, cancel)
            if cancel is not None and cancel.is_set():
                result.stop_reason = "cancel"
                return
            n_keep = min(n_keep + int(self.tokenizer.add_bos), len(ids))
            yield from self._sample_loop(ids, params, result, max_tokens, stop, context_shift,
                                         n_keep, n_logprobs, cancel, ignore_eos)

    def _sample_loop(self, ids, params, result, max_tokens, stop, context_shift, n_keep,
                     n_logprobs, cancel, ignore_eos):
        sampler = Sampler(params, self.n_ctx)
        # --ignore-eos as llama.cpp: end-of-generation tokens get a -inf logit bias
        banned = np.array(sorted(self.tokenizer.eog_ids), np.int64) if ignore_eos else None
        for t in ids:
            sampler.accept(t)
        stream = TextStream(stop)
        result.stop_reason = "length"
        while max_tokens < 0 or result.n_generated < max_tokens:
            if cancel is not None and cancel.is_set():
                result.stop_reason = "cancel"
                break
            if banned is not None and banned.size:
                self.last_logits[banned] = -np.inf
            token = sampler.sample(self.last_logits)
            if n_logprobs:
                result.logprobs.append((token, top_logprobs(self.last_logits, n_logprobs)))
            if token in self.tokenizer.eog_ids:
                result.stop_reason = "eos"
                break
            sampler.accept(token)
            result.tokens.append(token)
            result.n_generated += 1
            text = stream.feed(self.tokenizer.token_to_piece(token))
            if text:
                yield text
            if stream.stopped:
                result.stop_reason = "stop"
                break
            if result.n_generated == max_tokens:  # the last token needs no evaluation
                break                             # (completion.cpp's loop ends on n_remain 0)
            # completion.cpp: shift (or stop) when n_past + 1 >= n_ctx
            if len(self.tokens) + 1 >= self.n_ctx:
                if not context_shift:
                    result.stop_reason = "context"
                    break
                self._shift(n_keep)
            self._eval([token])
        tail = stream.flush()
        if tail:
            yield tail

    def _shift(self, n_keep):
        """llama.cpp's context shift (completion.cpp): keep the first n_keep tokens,
        drop half of the rest, slide the tail's positions down (keys re-rotated)."""
        n_discard = (len(self.tokens) - n_keep) // 2
        self.transformer.shift(n_keep, n_discard)
        self.tokens = self.tokens[:n_keep] + self.tokens[n_keep + n_discard:]
