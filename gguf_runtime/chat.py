"""Chat templates: Jinja in an immutable sandbox, with budgets, and tokenization
that keeps message text from ever becoming control tokens.

The template carried by a GGUF file is untrusted code. It renders in
jinja2.sandbox.ImmutableSandboxedEnvironment (no attribute access to internals, no
mutation of passed objects), string/list repetition and powers are size-checked,
and a trace hook stops a template that runs too long or writes too much.
"""
import datetime
import json
import sys
import time

from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ModelError

MAX_OUTPUT_CHARS = 1 << 20   # a rendered prompt larger than this is refused
MAX_SECONDS = 2.0            # wall-clock budget for one render
_CHECK_EVERY = 1000          # trace events between clock checks

# Fallbacks for models without tokenizer.chat_template (--chat-template NAME).
NAMED_TEMPLATES = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    # llama-chat.cpp LLM_CHAT_TEMPLATE_GEMMA: system text joins the first user turn.
    "gemma": (
        "{% set ns = namespace(system='') %}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set ns.system = ns.system + (m['content'] | trim) %}"
        "{% else %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "<start_of_turn>{{ role }}\n{% if ns.system and role != 'model' %}{{ ns.system }}\n\n"
        "{% set ns.system = '' %}{% endif %}{{ m['content'] | trim }}<end_of_turn>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"),
}

# Message text is wrapped in these private-use characters while rendering, so the
# rendered prompt can be split into template text and message text afterwards.
_OPEN, _CLOSE = "\ue000", "\ue001"


class _BudgetSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("template: exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) \
                        and len(seq) * n > MAX_OUTPUT_CHARS:
                    raise SecurityError("template: repetition too large")
        return super().call_binop(context, operator, left, right)


def _raise_exception(message):
    raise TemplateError(message)


def _make_environment():
    env = _BudgetSandbox(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda v, indent=None, **_: json.dumps(v, indent=indent,
                                                                 ensure_ascii=False)
    return env


class _Budget:
    """A trace hook that aborts a render past its time budget."""

    def __init__(self):
        self.deadline = time.monotonic() + MAX_SECONDS
        self.events = 0

    def __call__(self, frame, event, arg):
        self.events += 1
        if self.events % _CHECK_EVERY == 0 and time.monotonic() > self.deadline:
            raise SecurityError("template: too much work (stopped after "
                                f"{MAX_SECONDS:g} s)")
        return self


def resolve_template(source: str | None, name_or_file: str | None = None) -> str | None:
    """The template text: --chat-template NAME|FILE overrides the file's own."""
    if name_or_file:
        if name_or_file in NAMED_TEMPLATES:
            return NAMED_TEMPLATES[name_or_file]
        try:
            with open(name_or_file, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            known = ", ".join(NAMED_TEMPLATES)
            raise ModelError(f"chat template '{name_or_file}' is neither a file nor one "
                             f"of {known} ({e.strerror})") from None
    return source


def render(template: str, messages, bos_token="", eos_token="",
           add_generation_prompt=True, **kwargs) -> str:
    """Render messages with the template inside the sandbox and budgets."""
    env = _make_environment()
    budget = _Budget()
    previous = sys.gettrace()
    sys.settrace(budget)
    try:
        compiled = env.from_string(template)
        pieces, size = [], 0
        for piece in compiled.generate(messages=messages, bos_token=bos_token,
                                       eos_token=eos_token,
                                       add_generation_prompt=add_generation_prompt,
                                       **kwargs):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise SecurityError("template: output too large")
            pieces.append(piece)
        return "".join(pieces)
    except (TemplateError, SecurityError) as e:
        raise ModelError(f"chat template failed: {e}") from None
    except Exception as e:  # any error raised by template code stays one line
        raise ModelError(f"chat template failed: {type(e).__name__}: {e}") from None
    finally:
        sys.settrace(previous)


def _wrap_contents(messages):
    wrapped = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), str):
            m["content"] = _OPEN + m["content"] + _CLOSE
        wrapped.append(m)
    return wrapped


def render_segments(template, messages, **kwargs) -> list[tuple[str, bool]]:
    """The rendered prompt as (text, is_message_text) segments.

    Template text may hold control tokens; message text never does. The template is
    rendered twice, with and without markers around message text; where it
    transformed the text (e.g. `| trim`), the marked span is trimmed to match."""
    plain = render(template, messages, **kwargs)
    marked = render(template, _wrap_contents(messages), **kwargs)
    pieces = []
    for i, part in enumerate(marked.split(_OPEN)):
        if i:
            text, _, part = part.partition(_CLOSE)
            pieces.append((text, True))
        pieces.append((part, False))
    segments, pos = [], 0
    for text, is_message in pieces:
        if is_message:
            text = _match_transform(text, plain, pos)
        if text:
            segments.append((text, is_message))
            pos += len(text)
    if "".join(s for s, _ in segments) != plain:
        raise ModelError("chat template transforms message text in a way that "
                         "cannot be separated from template text")
    return segments


def _match_transform(text, plain, pos):
    for candidate in (text, text.strip(), text.lstrip(), text.rstrip()):
        if plain.startswith(candidate, pos):
            return candidate
    return text
