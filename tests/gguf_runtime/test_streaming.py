import pytest

from gguf_runtime.streaming import TextStream


def run(pieces, stop=()):
    stream = TextStream(stop)
    shown = [stream.feed(p) for p in pieces]
    return shown, stream.flush(), stream.stopped


def test_partial_utf8_is_held_back():
    euro = "€".encode()          # 3 bytes
    shown, rest, _ = run([b"a", euro[:1], euro[1:2], euro[2:] + b"b"])
    assert shown == ["a", "", "", "€b"] and rest == ""


def test_emoji_split_across_four_tokens():
    data = "👩‍👧".encode()
    shown, rest, _ = run([bytes([b]) for b in data])
    assert "".join(shown) + rest == "👩‍👧"
    assert all("\ufffd" not in s for s in shown)


def test_stop_string_spanning_tokens_is_cut():
    shown, rest, stopped = run([b"Hello <|e", b"nd|> more"], stop=["<|end|>"])
    assert "".join(shown) + rest == "Hello " and stopped


def test_text_that_only_resembles_a_stop_prefix_is_released():
    shown, rest, stopped = run([b"a <", b"b"], stop=["<|end|>"])
    assert shown == ["a ", "<b"] and not stopped


def test_invalid_bytes_become_replacement_char():
    shown, rest, _ = run([b"\xff", b"x"])
    assert "".join(shown) + rest == "\ufffdx"


@pytest.mark.parametrize("stop", [["\n\n"], ["User:", "\n\n"]])
def test_multiple_stops_first_match_wins(stop):
    shown, rest, stopped = run([b"line\n", b"\nUser: hi"], stop=stop)
    assert "".join(shown) + rest == "line" and stopped
