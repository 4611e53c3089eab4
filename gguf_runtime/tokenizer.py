"""Tokenizers identical to llama.cpp's, built from GGUF metadata.

`tokenizer.ggml.model` picks the algorithm: "gpt2" is byte-level BPE
(tokenizer_bpe.py), "llama" SentencePiece-style (tokenizer_spm.py). Special tokens are cut out of the text first, as
llama-vocab.cpp tokenizer_st_partition: control tokens only when parse_special is
on, user-defined tokens always.
"""
import numpy as np

from .errors import ModelError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class Tokenizer:
    def __init__(self, md, algorithm):
        self.tokens = md["tokenizer.ggml.tokens"]
        self.n_vocab = len(self.tokens)
        self.types = np.asarray(md.get("tokenizer.ggml.token_type",
                                       np.full(self.n_vocab, NORMAL)), np.int32)
        self.bos_id = int(md.get("tokenizer.ggml.bos_token_id", -1))
        self.eos_id = int(md.get("tokenizer.ggml.eos_token_id", -1))
        self.add_bos = bool(md.get("tokenizer.ggml.add_bos_token", False))
        self.add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False))
        self.algorithm = algorithm
        self.eog_ids = self._eog_ids(md)
        specials = [(t, i) for i, t in enumerate(self.tokens)
                    if self.types[i] in (CONTROL, USER_DEFINED) and t]
        # longest first, so '<|im_start|>' wins over a shorter prefix token
        self.specials = sorted(specials, key=lambda p: -len(p[0]))

    @classmethod
    def from_metadata(cls, md):
        model = md.get("tokenizer.ggml.model")
        if model == "gpt2":
            from .tokenizer_bpe import BPE
            return cls(md, BPE(md["tokenizer.ggml.tokens"], md.get("tokenizer.ggml.merges", []),
                               md.get("tokenizer.ggml.pre", "default")))
        if model == "llama":
            from .tokenizer_spm import SPM
            return cls(md, SPM(md["tokenizer.ggml.tokens"], md["tokenizer.ggml.scores"],
                               bool(md.get("tokenizer.ggml.add_space_prefix", True))))
        raise ModelError(f"tokenizer model '{model}' is not supported yet")

    def _eog_ids(self, md):
        """llama-vocab.cpp: EOS, EOT, EOM and control tokens such as <|im_end|>."""
        ids = {self.eos_id} if self.eos_id >= 0 else set()
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            if key in md:
                ids.add(int(md[key]))
        for i, t in enumerate(self.tokens):
            if self.types[i] == CONTROL and t in ("<|eot_id|>", "<|im_end|>", "<|end|>",
                                                  "<end_of_turn>", "<|endoftext|>", "<EOT>"):
                ids.add(i)
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
