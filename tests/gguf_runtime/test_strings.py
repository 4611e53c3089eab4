"""strings.StringArray: the compact form of GGUF string arrays, against Python lists
and dicts (and the real vocabularies against gguf-py's reading of them)."""
import gguf
import pytest

from gguf_runtime.reader import GGUFFile
from gguf_runtime.strings import InvalidString, StringArray


def _array(strings):
    return StringArray.from_pieces([s.encode() for s in strings])


def test_sequence_behaves_as_the_list():
    strings = ["a", "", "ü", "▁the", "来", "eg", "😀x"]
    arr = _array(strings)
    assert len(arr) == len(strings)
    assert list(arr) == strings and arr == strings and arr == tuple(strings)
    assert arr[-1] == strings[-1] and arr[2:5] == strings[2:5]
    assert arr != strings[:-1] and arr != "a"
    with pytest.raises(IndexError):
        arr[len(strings)]


def test_index_of_is_the_last_id_of_a_text():
    # llama-vocab.cpp fills token_to_id in id order: a repeated text maps to its last id
    strings = ["a", "b", "a", "eg", "来", "", "ab", "b"]
    reference = {s: i for i, s in enumerate(strings)}
    arr = _array(strings)
    for s in set(strings) | {"c", "ba", "e", "来来"}:
        assert arr.index_of(s) == reference.get(s), s


def test_texts_whose_str_hashes_agree_stay_apart():
    # CPython hashes str by its internal form: 'eg' (2 one-byte chars) and U+6765
    # (one two-byte char) are the same bytes, so their hash() is equal
    assert hash("eg") == hash("\u6765")
    arr = _array(["eg", "\u6765"])
    assert (arr.index_of("eg"), arr.index_of("\u6765")) == (0, 1)


@pytest.mark.parametrize("pieces, bad", [
    ([b"ok", b"\xff\xfe"], 1),
    ([b"\xc3", b"\xa9"], 1),      # a character split across two pieces
    ([b"", b"\x80", b"x"], 1),    # a piece starting inside a character
    ([b"a", b"\xe2\x82"], 1),     # truncated at the end
    ([b"\xc3", b"", b"a"], 0),
])
def test_a_piece_invalid_on_its_own_is_named(pieces, bad):
    with pytest.raises(InvalidString) as e:
        StringArray.from_pieces(pieces)
    assert e.value.index == bad


@pytest.mark.parametrize("which", ["smollm2_path", "gemma3_path"])
def test_real_vocabularies_match_gguf_py_and_a_dict(which, request):
    path = request.getfixturevalue(which)
    field = gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"]
    theirs = [bytes(field.parts[i]).decode() for i in field.data]
    with GGUFFile(path) as f:
        ours = f.metadata["tokenizer.ggml.tokens"]
        assert isinstance(ours, StringArray) and ours == theirs
        reference = {s: i for i, s in enumerate(theirs)}
        assert all(ours.index_of(s) == i for s, i in reference.items())
        assert ours.index_of("not a token \u6765") is None
