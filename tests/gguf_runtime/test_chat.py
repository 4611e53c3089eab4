"""Chat templates against llama.cpp's own expected renderings, and the sandbox."""
import time

import pytest

from gguf_runtime.chat import NAMED_TEMPLATES, render, render_segments
from gguf_runtime.errors import ModelError

# The conversation and expected outputs of llama.cpp tests/test-chat-template.cpp.
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "},
    {"role": "user", "content": "Another question"},
]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}")
CHATML_EXPECTED = (
    "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello"
    "<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you"
    "<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user"
    "\nAnother question<|im_end|>\n<|im_start|>assistant\n")
OPENHERMES_TEMPLATE = (
    "{% for message in messages %}{{bos_token + message['role'] + '\\n' + message['content']"
    " + eos_token + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ bos_token + "
    "'assistant\\n' }}{% endif %}")
OPENHERMES_EXPECTED = (
    "<s>system\nYou are a helpful assistant</s>\n<s>user\nHello</s>\n<s>assistant\nHi there"
    "</s>\n<s>user\nWho are you</s>\n<s>assistant\n   I am an assistant   </s>\n<s>user\n"
    "Another question</s>\n<s>assistant\n")
GEMMA_EXPECTED = (  # llama-chat.cpp's built-in gemma format (expected_output)
    "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>"
    "model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n"
    "<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother "
    "question<end_of_turn>\n<start_of_turn>model\n")


@pytest.mark.parametrize("template, expected, tokens", [
    (CHATML_TEMPLATE, CHATML_EXPECTED, {}),
    (OPENHERMES_TEMPLATE, OPENHERMES_EXPECTED, {"bos_token": "<s>", "eos_token": "</s>"}),
    (NAMED_TEMPLATES["gemma"], GEMMA_EXPECTED, {}),
    (NAMED_TEMPLATES["chatml"], CHATML_EXPECTED, {}),
])
def test_renders_as_llama_cpp(template, expected, tokens):
    assert render(template, CONVERSATION, **tokens) == expected


def test_segments_keep_message_text_apart():
    messages = [{"role": "user", "content": "  say <start_of_turn> and <bos>  "}]
    segments = render_segments(NAMED_TEMPLATES["gemma"], messages)
    assert segments == [("<start_of_turn>user\n", False),
                        ("say <start_of_turn> and <bos>", True),
                        ("<end_of_turn>\n<start_of_turn>model\n", False)]
    joined = "".join(s for s, _ in segments)
    assert joined == render(NAMED_TEMPLATES["gemma"], messages)


@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    # CVE-2024-34359 (llama-cpp-python): template reaching os through globals
    "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% set l = [] %}{{ l.append(1) }}",            # mutation is refused (immutable)
    "{{ 'a' * 100000000 }}",                          # memory bomb
    "{{ 9 ** 999999999 }}",
    "{{ raise_exception('nope') }}",
])
def test_hostile_templates_give_one_line_error(payload):
    with pytest.raises(ModelError) as info:
        render(payload, CONVERSATION)
    assert "\n" not in str(info.value)


def test_runaway_template_is_stopped():
    start = time.monotonic()
    with pytest.raises(ModelError, match="too much work"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
               "{% endfor %}", CONVERSATION)
    assert time.monotonic() - start < 10


def test_huge_output_is_refused():
    with pytest.raises(ModelError, match="too large"):
        render("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", CONVERSATION)
