"""gguf-run: what happens after the arguments are parsed (cli.py parses them).

Modes as llama.cpp's: with a chat template, -p is one chat turn answered and done
(-cnv makes it an interactive conversation); without one, or with -no-cnv, the
prompt is continued as raw text like llama-completion.
"""
import json
import sys
import time

import click

from .errors import ModelError


def _stats(label, n_tokens, seconds):
    rate = n_tokens / seconds if seconds > 0 else 0.0
    return f"{label}: {n_tokens} tokens in {seconds:.2f} s ({rate:.1f} tokens/s)"


def _stream(model, pieces, started):
    """Print pieces as they come; report prompt and generation speed on stderr."""
    first = None
    text = []
    for piece in pieces:
        if first is None:
            first = time.perf_counter()
        sys.stdout.write(piece)
        sys.stdout.flush()
        text.append(piece)
    end = time.perf_counter()
    first = first or end
    result = model.last_result
    n_eval = result.n_prompt - result.n_reused
    click.echo("", err=True)
    click.echo(_stats("prompt", n_eval, first - started), err=True)
    click.echo(_stats("generation", result.n_generated, end - first), err=True)
    if result.stop_reason == "context":
        click.echo("context full and context shift is disabled: stopping "
                   "(use --context-shift or a larger -c)", err=True)
    return "".join(text)


def _compile_notice():
    """One line on stderr when no compiled kernels are cached yet (first run)."""
    import os
    from pathlib import Path
    import quant_formats
    if os.environ.get("NUMBA_CACHE_DIR"):
        places = [Path(os.environ["NUMBA_CACHE_DIR"])]
    else:  # beside the modules, or numba's user-wide fallback for read-only installs
        places = [Path(quant_formats.__file__).parent / "__pycache__",
                  Path(__file__).parent / "__pycache__", Path.home() / ".cache" / "numba"]
    if not any(next(p.rglob("*.nbi"), None) for p in places if p.is_dir()):
        click.echo("first run: compiling the kernels this model needs (once, about a minute)",
                   err=True)


def run(opts: dict):
    _compile_notice()
    from .model import Model
    from .chat import resolve_template
    started = time.perf_counter()
    with Model.load(opts["model"], n_ctx=opts["ctx_size"], n_threads=opts["threads"],
                    cache_type_k=opts["cache_type_k"], cache_type_v=opts["cache_type_v"]) as model:
        model.chat_template = resolve_template(model.chat_template, opts["chat_template"])
        click.echo(f"loaded {opts['model']} in {time.perf_counter() - started:.2f} s "
                   f"(n_ctx {model.n_ctx}, {model.n_threads} threads)", err=True)
        gen = dict(stop=tuple(opts["reverse_prompt"]), context_shift=opts["context_shift"],
                   n_keep=opts["keep"], temp=opts["temp"], top_k=opts["top_k"],
                   top_p=opts["top_p"], min_p=opts["min_p"],
                   repeat_penalty=opts["repeat_penalty"], seed=opts["seed"],
                   ignore_eos=opts["ignore_eos"])
        chat_mode = opts["conversation"]
        if chat_mode is None:
            chat_mode = bool(model.chat_template)
        if not chat_mode:
            _complete(model, opts, gen)
        elif opts["conversation"] and not opts["single_turn"]:
            _converse(model, opts, gen)
        else:
            messages = _system(opts) + [{"role": "user", "content": opts["prompt"] or ""}]
            _stream(model, model.chat(messages, opts["n_predict"], **_chat_kwargs(opts, gen)),
                    time.perf_counter())
            sys.stdout.write("\n")


def _chat_kwargs(opts, gen):
    kwargs = dict(gen)
    if opts["chat_template_kwargs"]:
        try:
            kwargs["template_kwargs"] = json.loads(opts["chat_template_kwargs"])
        except json.JSONDecodeError as e:
            raise click.BadParameter(f"not JSON: {e}", param_hint="--chat-template-kwargs")
    return kwargs


def _system(opts):
    return [{"role": "system", "content": opts["system_prompt"]}] if opts["system_prompt"] else []


def _complete(model, opts, gen):
    prompt = opts["prompt"] or ""
    if not opts["no_display_prompt"]:
        sys.stdout.write(prompt)
    _stream(model, model.generate(prompt, opts["n_predict"], **gen), time.perf_counter())
    # as llama-completion prints them (tools/completion/completion.cpp)
    if model.last_result.stop_reason == "eos":
        sys.stdout.write(" [end of text]\n")
    sys.stdout.write("\n\n")


def _converse(model, opts, gen):
    """Interactive multi-turn chat; the cache carries over between turns."""
    if not model.chat_template:
        raise ModelError("conversation mode needs a chat template (--chat-template NAME|FILE)")
    messages = _system(opts)
    first = opts["prompt"]
    while True:
        if first:
            user, first = first, None
        else:
            try:
                user = input("\n> ")
            except EOFError:
                return
        messages.append({"role": "user", "content": user})
        reply = _stream(model, model.chat(messages, opts["n_predict"],
                                          **_chat_kwargs(opts, gen)), time.perf_counter())
        messages.append({"role": "assistant", "content": reply})
