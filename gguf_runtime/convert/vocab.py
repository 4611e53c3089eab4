"""Tokenizer files -> GGUF vocabulary keys, as llama.cpp's converter writes them.

Two kinds (conversion/base.py):
  - GPT-2 style byte-level BPE from tokenizer.json (_set_vocab_gpt2 /
    get_vocab_base): tokens, types, merges, and the pre-tokenizer's name, found by
    hashing the token ids of a fixed text (get_vocab_base_pre). The ids come from
    the `tokenizers` library (imported here only), which is what transformers'
    fast tokenizers run, so no torch or transformers is needed.
  - SentencePiece tokenizer.model (_set_vocab_sentencepiece /
    _create_vocab_sentencepiece) through the sentencepiece package.
Special token ids, add_bos/eos flags and the chat template come from
special_vocab.SpecialVocab (gguf-py's SpecialVocab as llama.cpp's tree has it).
"""
import json
from hashlib import sha256
from pathlib import Path

from ..errors import ModelError
from .pre_tokenizer_hashes import CHECK_TEXT, PRE_TOKENIZERS
from .special_vocab import SpecialVocab

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # gguf.TokenType
SPIECE_SPACE = "\u2581"


def looks_special(text: str) -> bool:
    """base.py TextModel.does_token_look_special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
            or (text.startswith("<unused") and text.endswith(">")))


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path.name}: cannot read {what} ({e})") from None


# ---- GPT-2 style BPE ---------------------------------------------------------

def _load_tokenizer(model_dir: Path):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ModelError("BPE tokenizers need the 'tokenizers' package "
                         "(pip install tokenizers)") from None
    try:
        return Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    except Exception as e:  # the Rust library raises plain Exception subclasses
        raise ModelError(f"tokenizer.json: cannot load ({str(e).splitlines()[0]})") from None


def pre_tokenizer_name(tokenizer) -> str:
    """get_vocab_base_pre: the name listed for the hash of CHECK_TEXT's token ids."""
    ids = tokenizer.encode(CHECK_TEXT).ids
    digest = sha256(str(ids).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        raise ModelError(f"BPE pre-tokenizer not recognized (chkhsh {digest}); "
                         f"llama.cpp's converter does not know it either")
    return PRE_TOKENIZERS[digest]


def _decode_round_trip(tokenizer, text: str, clean_up: bool) -> str:
    """tokenizer.decode(tokenizer.encode(text)) as transformers does it."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    out = tokenizer.decode(ids, skip_special_tokens=False)
    if clean_up:  # transformers clean_up_tokenization
        for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                     (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                     (" 're", "'re")):
            out = out.replace(a, b)
    return out


def bpe_vocab(model_dir: Path, vocab_size: int, tokenizer_config: dict) -> tuple:
    """get_vocab_base: (tokens, token types, pre-tokenizer name)."""
    tokenizer = _load_tokenizer(model_dir)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if vocab and max(vocab.values()) >= vocab_size:
        raise ModelError(f"tokenizer.json has token id {max(vocab.values())} >= "
                         f"vocab_size {vocab_size} of config.json")
    pre = pre_tokenizer_name(tokenizer)
    added = {t.content: t for t in tokenizer.get_added_tokens_decoder().values()}
    clean_up = bool(tokenizer_config.get("clean_up_tokenization_spaces", False))
    reverse = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        if token in added:
            if not added[token].normalized:
                token = _decode_round_trip(tokenizer, token, clean_up)
            if added[reverse[i]].special or looks_special(token):
                types.append(CONTROL)
            else:
                token = token.replace(SPIECE_SPACE, " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(token)
    return tokens, types, pre


def add_bpe_vocab(writer, model_dir: Path, vocab_size: int, tokenizer_config: dict):
    """base.py _set_vocab_gpt2."""
    tokens, types, pre = bpe_vocab(model_dir, vocab_size, tokenizer_config)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    SpecialVocab(model_dir, load_merges=True).add_to_gguf(writer)
    return len(tokens)


# ---- SentencePiece -----------------------------------------------------------

def spm_vocab(model_dir: Path, vocab_size, tokenizer_config: dict) -> tuple:
    """_create_vocab_sentencepiece: (tokens as bytes, scores, types)."""
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(model_dir / "tokenizer.model"))
    except (OSError, RuntimeError) as e:
        raise ModelError(f"tokenizer.model: cannot load ({e})") from None
    n = vocab_size or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores, types = [-10000.0] * n, [UNUSED] * n
    for i in range(min(n, sp.vocab_size())):
        kind = NORMAL
        if sp.IsUnknown(i):
            kind = UNKNOWN
        elif sp.IsControl(i):
            kind = CONTROL
        elif sp.IsUnused(i):
            kind = UNUSED
        elif sp.IsByte(i):
            kind = BYTE
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), kind
    added_file = model_dir / "added_tokens.json"
    if added_file.is_file():
        for text, i in read_json(added_file, "added tokens").items():
            if 0 <= i < n:
                tokens[i], scores[i], types[i] = text.encode(), -1000.0, USER_DEFINED
    for key, data in tokenizer_config.get("added_tokens_decoder", {}).items():
        i, text = int(key), data["content"]
        if not 0 <= i < n:
            continue
        if data.get("special") or looks_special(text):
            types[i] = CONTROL
        else:
            text = text.replace(SPIECE_SPACE, " ")
            types[i] = USER_DEFINED
        scores[i], tokens[i] = -1000.0, text.encode()
    return tokens, scores, types


def add_spm_vocab(writer, model_dir: Path, vocab_size, tokenizer_config: dict):
    """base.py _set_vocab_sentencepiece."""
    tokens, scores, types = spm_vocab(model_dir, vocab_size, tokenizer_config)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(writer)
    return len(tokens)


def vocab_kind(model_dir: Path) -> str:
    """'spm' when tokenizer.model exists (their set_vocab tries it first), else 'bpe'."""
    if (model_dir / "tokenizer.model").is_file():
        return "spm"
    if not (model_dir / "tokenizer.json").is_file():
        raise ModelError(f"{model_dir}: no tokenizer.json or tokenizer.model")
    model = read_json(model_dir / "tokenizer.json", "the tokenizer").get("model", {})
    if model.get("type") != "BPE":
        raise ModelError(f"tokenizer.json: model type {model.get('type')!r} is not supported "
                         f"(BPE or a SentencePiece tokenizer.model)")
    return "bpe"


def uses_llama_hf_vocab(model_dir: Path) -> bool:
    """gguf-py LlamaHfVocab's test: a Llama-2 style BPE with byte fallback (needs
    transformers in their converter; not supported here)."""
    data = read_json(model_dir / "tokenizer.json", "the tokenizer")
    model = data.get("model", {})
    if model.get("ignore_merges", False) and not model.get("byte_fallback", True):
        return False
    return bool(model.get("byte_fallback", False)) and (data.get("decoder") or {}).get(
        "type") == "Sequence"
