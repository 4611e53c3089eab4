"""Vocabulary conversion: the BPE pre-tokenizer name found by hashing, and the
SentencePiece path, checked against the original GGUF and sentencepiece itself."""
import json

import numpy as np
import pytest

import hf_checkpoints
import spm_model
from gguf_runtime.convert import vocab
from gguf_runtime.errors import ModelError
from gguf_runtime.reader import GGUFFile


@pytest.fixture(scope="module")
def smollm2_tokenizer_dir(smollm2_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    with GGUFFile(smollm2_path) as f:
        tok_json, tok_config = hf_checkpoints.smollm2_tokenizer_files(f.metadata)
        expected = (f.metadata["tokenizer.ggml.pre"], list(f.metadata["tokenizer.ggml.tokens"]),
                    [int(t) for t in f.metadata["tokenizer.ggml.token_type"]])
    hf_checkpoints.write_json(out / "tokenizer.json", tok_json)
    hf_checkpoints.write_json(out / "tokenizer_config.json", tok_config)
    return out, expected


def test_bpe_vocab_matches_the_original_gguf(smollm2_tokenizer_dir):
    """The rebuilt tokenizer.json hashes to the name llama.cpp gave SmolLM2 ('smollm')."""
    model_dir, (pre, tokens, types) = smollm2_tokenizer_dir
    ours_tokens, ours_types, ours_pre = vocab.bpe_vocab(model_dir, len(tokens), {})
    assert ours_pre == pre == "smollm"
    assert ours_tokens == tokens
    assert ours_types == types


def test_vocab_padded_to_config_size(smollm2_tokenizer_dir):
    model_dir, (_, tokens, _) = smollm2_tokenizer_dir
    ours_tokens, ours_types, _ = vocab.bpe_vocab(model_dir, len(tokens) + 3, {})
    assert ours_tokens[-3:] == [f"[PAD{len(tokens) + i}]" for i in range(3)]
    assert ours_types[-3:] == [vocab.UNUSED] * 3


def test_unknown_pre_tokenizer_is_refused(smollm2_tokenizer_dir, tmp_path):
    """Splitting at every 'e' first gives a hash llama.cpp does not know either."""
    model_dir, (_, tokens, _) = smollm2_tokenizer_dir
    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"]["pretokenizers"].insert(0, {
        "type": "Split", "pattern": {"String": "e"}, "behavior": "Isolated", "invert": False})
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match="pre-tokenizer not recognized"):
        vocab.bpe_vocab(tmp_path, len(tokens), {})


def test_spm_vocab_against_sentencepiece(tmp_path):
    from sentencepiece import SentencePieceProcessor
    pieces = spm_model.tiny_spm_pieces()
    (tmp_path / "tokenizer.model").write_bytes(spm_model.spm_model_bytes(pieces))
    config = {"added_tokens_decoder": {"5": {"content": "<start_of_turn>", "special": True}}}
    tokens, scores, types = vocab.spm_vocab(tmp_path, len(pieces) + 2, config)
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(tmp_path / "tokenizer.model"))
    assert tokens[:len(pieces)] == [sp.IdToPiece(i).encode() for i in range(len(pieces))]
    assert tokens[-2:] == [f"[PAD{len(pieces) + i}]".encode() for i in range(2)]
    np.testing.assert_array_equal(scores[7:len(pieces)],
                                  [sp.GetScore(i) for i in range(7, len(pieces))])
    # user-defined pieces count as NORMAL (their rule checks unknown/control/unused/byte only);
    # <start_of_turn> becomes CONTROL through the config
    assert types[:8] == [3, 3, 3, 2, 1, 3, 1, 6]
    assert scores[5] == -1000.0 and scores[-1] == -10000.0


def test_looks_special():
    assert vocab.looks_special("<|im_start|>") and vocab.looks_special("<unused12>")
    assert not vocab.looks_special("<start_of_turn>") and not vocab.looks_special("hello")
