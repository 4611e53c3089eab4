"""Tokenizers identical to llama.cpp's, built from GGUF metadata.

`tokenizer.ggml.model` picks the algorithm: "gpt2" is byte-level BPE
(tokenizer_bpe.py), "llama" SentencePiece-style (tokenizer_spm.py). Special tokens are cut out of the text first, as
llama-vocab.cpp tokenizer_st_partition: control tokens only when parse_special is
on, user-defined tokens always.
"""
import numpy as np

from .errors import ModelError
from .strings import StringArray

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _list_of(md, key, kind, n, required=False):
    value = md.get(key)
    if value is None:
        if required:
            raise ModelError(f"metadata '{key}' is missing")
        return
    if (not isinstance(value, (list, np.ndarray, StringArray))
            or (n is not None and len(value) != n)):
        raise ModelError(f"metadata '{key}' must be an array"
                         + (f" of {n} entries" if n is not None else ""))
    if isinstance(value, StringArray):  # the reader's string arrays: str throughout
        ok = kind is str
    elif isinstance(value, np.ndarray):
        ok = np.issubdtype(value.dtype, np.number) and kind is not str
    else:
        ok = all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ModelError(f"metadata '{key}' has entries of the wrong type")


def _check_vocab(md):
    """Everything the tokenizers read, checked before they read it."""
    model = md.get("tokenizer.ggml.model")
    if not isinstance(model, str):
        raise ModelError("metadata 'tokenizer.ggml.model' is missing or not a string")
    _list_of(md, "tokenizer.ggml.tokens", str, None, required=True)
    n = len(md["tokenizer.ggml.tokens"])
    if n == 0:
        raise ModelError("the vocabulary is empty")
    _list_of(md, "tokenizer.ggml.token_type", int, n)
    _list_of(md, "tokenizer.ggml.scores", (int, float), n, required=model == "llama")
    _list_of(md, "tokenizer.ggml.merges", str, None)
    if not isinstance(md.get("tokenizer.ggml.pre", ""), str):
        raise ModelError("metadata 'tokenizer.ggml.pre' is not a string")
    for key in ("bos", "eos", "eot", "eom", "unknown", "padding"):
        value = md.get(f"tokenizer.ggml.{key}_token_id", -1)
        if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
                or not (-1 <= value < n or value == 2**32 - 1)):
            raise ModelError(f"metadata 'tokenizer.ggml.{key}_token_id' is {value!r}, "
                             f"not a token id below {n}")


def _string_array(tokens):
    """The vocabulary as a StringArray (the reader's type; metadata built in memory,
    as by gguf-convert, may hold a list)."""
    if isinstance(tokens, StringArray):
        return tokens
    return StringArray.from_pieces([t.encode() for t in tokens])


class Tokenizer:
    def __init__(self, md, algorithm):
        self.tokens = algorithm.tokens  # the StringArray the algorithm looks ids up in
        self.n_vocab = len(self.tokens)
        self.types = np.asarray(md.get("tokenizer.ggml.token_type",
                                       np.full(self.n_vocab, NORMAL)), np.int32)
        self.bos_id = self._id(md, "tokenizer.ggml.bos_token_id")
        self.eos_id = self._id(md, "tokenizer.ggml.eos_token_id")
        self.add_bos = bool(md.get("tokenizer.ggml.add_bos_token", False))
        self.add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False))
        self.algorithm = algorithm
        self.eog_ids = self._eog_ids(md)
        special_ids = np.flatnonzero((self.types == CONTROL) | (self.types == USER_DEFINED))
        specials = [(self.tokens[i], int(i)) for i in special_ids if self.tokens[i]]
        # longest first, so '<|im_start|>' wins over a shorter prefix token
        self.specials = sorted(specials, key=lambda p: -len(p[0]))

    @classmethod
    def from_metadata(cls, md):
        _check_vocab(md)
        model = md.get("tokenizer.ggml.model")
        tokens = _string_array(md["tokenizer.ggml.tokens"])
        if model == "gpt2":
            from .tokenizer_bpe import BPE
            return cls(md, BPE(tokens, md.get("tokenizer.ggml.merges", []),
                               md.get("tokenizer.ggml.pre", "default")))
        if model == "llama":
            from .tokenizer_spm import SPM
            return cls(md, SPM(tokens, md["tokenizer.ggml.scores"],
                               bool(md.get("tokenizer.ggml.add_space_prefix", True))))
        raise ModelError(f"tokenizer model '{model}' is not supported yet")

    def _id(self, md, key):
        """A special token's id, -1 when unset (or LLAMA_TOKEN_NULL, 2^32 - 1)."""
        value = int(md.get(key, -1))
        return value if 0 <= value < self.n_vocab else -1

    def _eog_ids(self, md):
        """llama-vocab.cpp: EOS, EOT, EOM and control tokens such as <|im_end|>."""
        ids = {self.eos_id} if self.eos_id >= 0 else set()
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            if self._id(md, key) >= 0:
                ids.add(self._id(md, key))
        for i in np.flatnonzero(self.types == CONTROL):
            if self.tokens[i] in ("<|eot_id|>", "<|im_end|>", "<|end|>",
                                  "<end_of_turn>", "<|endoftext|>", "<EOT>"):
                ids.add(int(i))
        return ids

    def encode(self, text, add_special=True, parse_special=False):
        ids = [self.bos_id] if add_special and self.add_bos and self.bos_id >= 0 else []
        for piece, special_id in self._partition(text, parse_special):
            ids.extend([special_id] if special_id is not None else self.algorithm.encode(piece))
        if add_special and self.add_eos and self.eos_id >= 0:
            ids.append(self.eos_id)
        return ids

    def _partition(self, text, parse_special):
        pieces = [(text, None)]
        for token, token_id in self.specials:
            if not parse_special and self.types[token_id] == CONTROL:
                continue
            out = []
            for piece, sid in pieces:
                if sid is not None or token not in piece:
                    out.append((piece, sid))
                    continue
                parts = piece.split(token)
                for k, part in enumerate(parts):
                    if part:
                        out.append((part, None))
                    if k < len(parts) - 1:
                        out.append((token, token_id))
            pieces = out
        return pieces

    def token_text(self, token_id):
        return self.tokens[token_id]

    def token_to_piece(self, token_id) -> bytes:
        text = self.tokens[token_id]
        if self.types[token_id] in (CONTROL, USER_DEFINED):
            return text.encode()
        return self.algorithm.piece_bytes(text)

    def decode(self, ids, special=False) -> str:
        """Text of ids; control tokens only with special=True (llama_detokenize)."""
        pieces = (self.token_to_piece(i) for i in ids
                  if special or self.types[i] != CONTROL)
        return b"".join(pieces).decode("utf-8", errors="replace")
