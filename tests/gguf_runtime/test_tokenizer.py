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


@pytest.mark.parametrize("case", range(len(REFS["smollm2-135m"])))
def test_smollm2_ids_equal_llama_tokenize(smollm2_tokenizer, case):
    ref = REFS["smollm2-135m"][case]
    assert smollm2_tokenizer.encode(ref["text"], parse_special=True) == ref["special"]
    assert smollm2_tokenizer.encode(ref["text"], parse_special=False) == ref["plain"]


def test_decode_round_trips(smollm2_tokenizer):
    for ref in REFS["smollm2-135m"]:
        assert smollm2_tokenizer.decode(ref["special"]) == ref["text"]


def test_control_strings_stay_text_without_parse_special(smollm2_tokenizer):
    im_start = smollm2_tokenizer.tokens.index("<|im_start|>")
    assert smollm2_tokenizer.encode("<|im_start|>", parse_special=True) == [im_start]
    assert im_start not in smollm2_tokenizer.encode("<|im_start|>", parse_special=False)
    assert smollm2_tokenizer.tokens.index("<|im_end|>") in smollm2_tokenizer.eog_ids
