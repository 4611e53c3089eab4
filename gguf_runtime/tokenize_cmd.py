"""gguf-tokenize: llama-tokenize's behaviour and output (tools/tokenize/tokenize.cpp)."""
import re
import sys

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "'": "'", '"': '"', "\\": "\\"}


def process_escapes(text: str) -> str:
    """common.cpp string_process_escapes: \\n \\r \\t \\' \\" \\\\ and \\xHH; any other
    backslash sequence stays as written."""
    def replace(m):
        body = m.group(1)
        if body[0] == "x":
            return chr(int(body[1:], 16)) if len(body) == 3 else m.group(0)
        return _ESCAPES.get(body, m.group(0))
    return re.sub(r"\\(x[0-9a-fA-F]{2}|x|.)", replace, text, flags=re.S)


def tokenize_lines(tokenizer, text, ids_only, add_bos, parse_special, show_count):
    """The lines llama-tokenize prints for text."""
    ids = ([tokenizer.bos_id] if add_bos and tokenizer.add_bos else []) + \
        tokenizer.encode(text, add_special=False, parse_special=parse_special)
    if tokenizer.add_eos:
        ids.append(tokenizer.eos_id)
    lines = []
    if ids_only:
        lines.append("[" + ", ".join(str(i) for i in ids) + "]")
    else:
        for i in ids:
            raw = tokenizer.token_to_piece(i)
            try:
                lines.append(f"{i:6d} -> '{raw.decode('utf-8')}'")
            except UnicodeDecodeError:
                lines.append(f"{i:6d} -> '{raw.decode('utf-8', 'replace')}' (utf-8 decode failure)")
    if show_count:
        lines.append(f"Total number of tokens: {len(ids)}")
    return lines


def run(model, prompt, prompt_file, use_stdin, ids_only, no_bos, no_parse_special,
        no_escape, show_count):
    from .errors import ModelError
    from .pull import resolve_model
    from .reader import GGUFFile
    from .tokenizer import Tokenizer
    if use_stdin:
        text = sys.stdin.read()
    elif prompt_file is not None:
        text = prompt_file.read()        # a file is used verbatim, as llama-tokenize
    elif prompt is not None:
        text = prompt if no_escape else process_escapes(prompt)
    else:
        raise ModelError("must specify one of: --stdin, --file or --prompt")
    with GGUFFile(resolve_model(model)) as f:
        tokenizer = Tokenizer.from_metadata(f.metadata)
    for line in tokenize_lines(tokenizer, text, ids_only, not no_bos, not no_parse_special,
                               show_count):
        sys.stdout.write(line + "\n")
