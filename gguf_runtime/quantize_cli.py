"""gguf-quantize's argument handling, as tools/quantize/quantize.cpp parses them."""
import os
import re
from pathlib import Path

import click
from gguf import GGMLQuantizationType as T

import quant_formats as qf

from .quantize_mix import FILE_TYPES, Options


def parse_file_type(text):
    """A llama-quantize type name (any case) or its file-type number; None if neither
    (quantize.cpp try_parse_ftype)."""
    name = text.upper()
    if name in FILE_TYPES:
        return name
    if re.fullmatch(r"\d+", text):
        for candidate, (ftype, _) in FILE_TYPES.items():
            if int(ftype) == int(text):
                return candidate
    return None


def parse_ggml_type(text, what):
    """A GGML type by its ggml_type_name, any case (quantize.cpp parse_ggml_type)."""
    for qtype in qf.FORMATS:
        if T(qtype).name.lower() == text.lower():
            return T(qtype)
    raise click.ClickException(f"{what}: invalid ggml type '{text}'")


def parse_tensor_type(text):
    """PATTERN=TYPE; the pattern is lower-cased and searched as a regex."""
    pattern, sep, type_text = text.partition("=")
    if not sep or not pattern or not type_text:
        raise click.ClickException(f"--tensor-type: malformed '{text}' (want PATTERN=TYPE)")
    try:
        regex = re.compile(pattern.lower())
    except re.error as e:
        raise click.ClickException(f"--tensor-type: bad pattern '{pattern}': {e}")
    return regex, parse_ggml_type(type_text, "--tensor-type")


def split_positional(args):
    """IN [OUT] TYPE [NTHREADS] -> (in, out, type name, threads)."""
    if len(args) < 2:
        raise click.ClickException("usage: gguf-quantize [options] IN.gguf [OUT.gguf] TYPE [NTHREADS]")
    inp, rest = args[0], list(args[1:])
    file_type = parse_file_type(rest[0])
    if file_type is not None:  # IN TYPE: output beside the input, as llama-quantize
        out = str(Path(inp).parent / f"ggml-model-{file_type}.gguf")
        rest = rest[1:]
    else:
        out, rest = rest[0], rest[1:]
        if not rest:
            raise click.ClickException("missing TYPE")
        file_type = parse_file_type(rest[0])
        if file_type is None:
            raise click.ClickException(f"invalid type '{rest[0]}' (one of "
                                   f"{', '.join(FILE_TYPES)})")
        rest = rest[1:]
    threads = None
    if rest:
        if not re.fullmatch(r"\d+", rest[0]) or int(rest[0]) < 1 or len(rest) > 1:
            raise click.ClickException(f"invalid thread count '{' '.join(rest)}'")
        threads = int(rest[0])
    return inp, out, file_type, threads


def check_paths(inp, out):
    if not os.path.exists(inp):
        raise click.ClickException(f"{inp}: no such file")
    if os.path.isdir(inp):
        raise click.ClickException(f"{inp}: is a directory, not a GGUF file")
    if os.path.isdir(out):
        raise click.ClickException(f"{out}: is a directory")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise click.ClickException(f"{out_dir}: no such directory")
    if not os.access(out_dir, os.W_OK):
        raise click.ClickException(f"{out_dir}: not writable")
    if os.path.exists(out) and os.path.samefile(inp, out):
        raise click.ClickException(f"input and output files are the same: '{inp}'")


def run(args, imatrix_path, allow_requantize, pure, leave_output_tensor, output_tensor_type,
        token_embedding_type, tensor_types, quiet):
    from .quantize import quantize_model
    inp, out, file_type, threads = split_positional(args)
    check_paths(inp, out)
    if imatrix_path is not None and not os.path.isfile(imatrix_path):
        raise click.ClickException(f"{imatrix_path}: no such imatrix file")
    opts = Options(
        file_type=file_type, pure=pure, leave_output_tensor=leave_output_tensor,
        output_tensor_type=output_tensor_type and parse_ggml_type(output_tensor_type,
                                                                  "--output-tensor-type"),
        token_embedding_type=token_embedding_type and parse_ggml_type(
            token_embedding_type, "--token-embedding-type"),
        tensor_types=[parse_tensor_type(t) for t in tensor_types])
    quantize_model(inp, out, file_type, opts, imatrix_path=imatrix_path,
                   allow_requantize=allow_requantize, n_threads=threads, quiet=quiet)
