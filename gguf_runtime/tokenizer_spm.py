"""SentencePiece-style tokenizer as llama.cpp's llm_tokenizer_spm_session
(src/llama-vocab.cpp): spaces become '▁', UTF-8 characters are merged pairwise
by the score of the merged token (highest first, leftmost on ties), and pieces
that form no token fall back to <0xXX> byte tokens."""
import heapq

import numpy as np


class SPM:
    def __init__(self, tokens, scores, add_space_prefix):
        self.tokens = tokens  # a strings.StringArray: index_of finds a text's id
        self.scores = np.asarray(scores, np.float32)  # llama.cpp's scores are float
        self.add_space_prefix = add_space_prefix
        self.byte_ids = [tokens.index_of(f"<0x{b:02X}>") for b in range(256)]

    def encode(self, text, first_fragment=True):
        if self.add_space_prefix and first_fragment:
            text = " " + text
        text = text.replace(" ", "\u2581")
        symbols = list(text)  # one symbol per character; merged in place
        alive = [True] * len(symbols)
        nxt = list(range(1, len(symbols))) + [-1]
        prv = list(range(-1, len(symbols) - 1))
        heap, rev_merge = [], {}

        def try_add(left, right):
            if left < 0 or right < 0:
                return
            merged = symbols[left] + symbols[right]
            token_id = self.tokens.index_of(merged)
            if token_id is None:
                return
            heapq.heappush(heap, (-float(self.scores[token_id]), left, right, len(merged)))
            rev_merge[merged] = (left, right, symbols[left], symbols[right])

        for i in range(1, len(symbols)):
            try_add(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if not (alive[left] and alive[right]) or len(symbols[left]) + len(symbols[right]) != size:
                continue
            symbols[left] += symbols[right]
            alive[right] = False
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            try_add(prv[left], left)
            try_add(left, nxt[left])
        ids, i = [], 0 if symbols else -1
        while i != -1:
            self._resegment(symbols[i], rev_merge, ids)
            i = nxt[i]
        return ids

    def _resegment(self, text, rev_merge, ids):
        token_id = self.tokens.index_of(text)
        if token_id is not None:
            ids.append(token_id)
            return
        if text not in rev_merge:
            ids.extend(self.byte_ids[b] for b in text.encode())
            return
        _, _, left_text, right_text = rev_merge[text]
        self._resegment(left_text, rev_merge, ids)
        self._resegment(right_text, rev_merge, ids)

    @staticmethod
    def piece_bytes(token_text):
        if len(token_text) == 6 and token_text.startswith("<0x") and token_text.endswith(">"):
            return bytes([int(token_text[3:5], 16)])
        return token_text.replace("\u2581", " ").encode()
