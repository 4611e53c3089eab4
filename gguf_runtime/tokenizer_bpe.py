"""Byte-level BPE tokenizer as llama.cpp's llm_tokenizer_bpe (src/llama-vocab.cpp).

Text is split by the pre-tokenizer regexes named by `tokenizer.ggml.pre` (applied
in sequence, each to the pieces of the previous one, as unicode_regex_split in
src/unicode.cpp), each piece is mapped byte -> GPT-2 unicode character, and
merged by rank. Special tokens are matched before any of this.
"""
import functools

import regex

from .errors import ModelError

_GPT2 = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)")
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
           r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> regexes (llama-vocab.cpp llm_tokenizer_bpe constructor)
PRE_TOKENIZERS = {
    "default": [_GPT2], "gpt-2": [_GPT2],
    "smollm": [r"\p{N}", _GPT2],
    "llama3": [_LLAMA3], "llama-bpe": [_LLAMA3],
    "qwen2": [_QWEN2],
}


def _bytes_to_unicode():
    """GPT-2's byte -> printable character table (unicode.cpp unicode_byte_to_utf8_map)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def regex_split(text, patterns):
    """Split text by each pattern in turn; text between matches stays a piece."""
    pieces = [text]
    for pattern in patterns:
        compiled = regex.compile(pattern)
        out = []
        for piece in pieces:
            pos = 0
            for m in compiled.finditer(piece):
                if m.start() > pos:
                    out.append(piece[pos:m.start()])
                if m.end() > m.start():
                    out.append(m.group())
                pos = m.end()
            if pos < len(piece):
                out.append(piece[pos:])
        pieces = out
    return pieces


class BPE:
    def __init__(self, tokens, merges, pre):
        if pre not in PRE_TOKENIZERS:
            raise ModelError(f"unsupported BPE pre-tokenizer '{pre}' "
                             f"(known: {', '.join(sorted(PRE_TOKENIZERS))})")
        self.patterns = PRE_TOKENIZERS[pre]
        self.tokens = tokens  # a strings.StringArray: index_of finds a text's id
        self.ranks = {}
        for rank, merge in enumerate(merges):
            left, _, right = merge.partition(" ")
            self.ranks[(left, right)] = rank
        self._encode_word = functools.lru_cache(maxsize=1 << 16)(self._merge)

    def encode(self, text):
        ids = []
        for piece in regex_split(text, self.patterns):
            ids.extend(self._encode_word("".join(BYTE_TO_CHAR[b] for b in piece.encode())))
        return ids

    def _merge(self, word):
        symbols = list(word)
        while len(symbols) > 1:
            best, best_rank = None, None
            for i in range(len(symbols) - 1):
                rank = self.ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best is None:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        ids = []
        for s in symbols:
            token_id = self.tokens.index_of(s)
            if token_id is not None:
                ids.append(token_id)
            else:  # unknown merge result: fall back to its bytes' tokens
                ids.extend(i for i in map(self.tokens.index_of, s) if i is not None)
        return tuple(ids)

    @staticmethod
    def piece_bytes(token_text):
        return bytes(CHAR_TO_BYTE.get(c, 32) for c in token_text)
