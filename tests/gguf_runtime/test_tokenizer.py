"""Token ids identical to llama-tokenize (committed references, tests/data/
make_tokenizer_refs.py) on a stress text of whitespace, numbers, scripts, emoji,
code, URLs, contractions and special-token strings."""
import json
from pathlib import Path

import pytest

from gguf_runtime import GGUFFile
from gguf_runtime.tokenizer import Tokenizer

REFS = json.loads((Path(__file__).parents[1] / "data" / "tokenizer_refs.json")
                  .read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_path):
    with GGUFFile(smollm2_path) as f:
        return Tokenizer.from_metadata(f.metadata)


@pytest.fixture(scope="module")
def tokenizers(smollm2_tokenizer, gemma3_path):
    with GGUFFile(gemma3_path) as f:
        return {"smollm2-135m": smollm2_tokenizer, "gemma3-270m": Tokenizer.from_metadata(f.metadata)}


CASES = [(model, i) for model in sorted(REFS) for i in range(len(REFS[model]))]


@pytest.mark.parametrize("model, case", CASES)
def test_ids_equal_llama_tokenize(tokenizers, model, case):
    ref = REFS[model][case]
    assert tokenizers[model].encode(ref["text"], parse_special=True) == ref["special"]
    assert tokenizers[model].encode(ref["text"], parse_special=False) == ref["plain"]


@pytest.mark.parametrize("model", sorted(REFS))
def test_decode_round_trips(tokenizers, model):
    tok = tokenizers[model]
    for ref in REFS[model]:
        ids = ref["special"][1:] if tok.add_bos else ref["special"]
        assert tok.decode(ids, special=True) == ref["text"]


def test_gemma3_adds_bos_and_keeps_newline_runs_as_user_tokens(tokenizers):
    tok = tokenizers["gemma3-270m"]
    ids = tok.encode("a\n\n\nb")
    assert ids[0] == tok.bos_id and tok.tokens.index("\n\n\n") in ids
    assert tok.decode(ids) == "a\n\n\nb"  # BOS is a control token: not in the text


def test_control_strings_stay_text_without_parse_special(smollm2_tokenizer):
    im_start = smollm2_tokenizer.tokens.index("<|im_start|>")
    assert smollm2_tokenizer.encode("<|im_start|>", parse_special=True) == [im_start]
    assert im_start not in smollm2_tokenizer.encode("<|im_start|>", parse_special=False)
    assert smollm2_tokenizer.tokens.index("<|im_end|>") in smollm2_tokenizer.eog_ids
