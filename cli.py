"""Command-line tools: gguf-run, gguf-info, gguf-pull, ... (console scripts in pyproject).

Each command parses its arguments with click and calls into gguf_runtime; heavy
modules (numba, numpy kernels) are imported inside the commands so that --help
and argument errors answer at once.
"""
import sys

import click


def _fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _entry(command):
    """Run a click command; known errors become one line on stderr, Ctrl-C exits 130."""
    def main():
        from gguf_runtime.errors import GGUFError, ModelError
        try:
            command(standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except (GGUFError, ModelError, OSError) as e:
            _fail(str(e))
    return main


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", required=True, help="GGUF file, or a known name (gguf-pull)")
@click.option("-p", "--prompt", help="prompt text")
@click.option("-f", "--file", "prompt_file", type=click.File("r", encoding="utf-8"),
              help="read the prompt from a file")
@click.option("-n", "--n-predict", type=int, default=-1, show_default=True,
              help="tokens to generate (-1: until end of generation or context full)")
@click.option("-c", "--ctx-size", type=click.IntRange(min=16), default=4096, show_default=True,
              help="context size (capped at the model's training context)")
@click.option("-t", "--threads", type=click.IntRange(min=1), help="threads (default: cores)")
@click.option("--temp", type=float, default=0.8, show_default=True)
@click.option("--top-k", type=int, default=40, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--min-p", type=float, default=0.05, show_default=True)
@click.option("--repeat-penalty", type=float, default=1.0, show_default=True)
@click.option("-s", "--seed", type=int, help="random seed (default: random)")
@click.option("-r", "--reverse-prompt", multiple=True, help="stop at this text")
@click.option("--keep", type=click.IntRange(min=0), default=0,
              help="prompt tokens to keep on context shift")
@click.option("--context-shift/--no-context-shift", default=False,
              help="drop old tokens instead of stopping when the context is full")
@click.option("-cnv", "--conversation", "conversation", flag_value=True, default=None,
              help="interactive multi-turn chat")
@click.option("-no-cnv", "--no-conversation", "conversation", flag_value=False,
              help="raw text completion, ignoring any chat template")
@click.option("-st", "--single-turn", is_flag=True, help="answer one chat turn and exit")
@click.option("-sys", "--system-prompt", help="system message for chat")
@click.option("--chat-template", help="template NAME (chatml, gemma, llama3) or FILE")
@click.option("--chat-template-kwargs", help="JSON object passed to the template")
@click.option("--no-display-prompt", is_flag=True, help="don't echo the prompt (completion)")
@click.option("--ignore-eos", is_flag=True, help="never stop at end-of-generation tokens")
@click.option("-ctk", "--cache-type-k", type=click.Choice(["f16", "q8_0"]), default="f16")
@click.option("-ctv", "--cache-type-v", type=click.Choice(["f16", "q8_0"]), default="f16")
def run(**opts):
    """Generate text with a GGUF model."""
    from gguf_runtime.cli_run import run as run_model
    prompt_file = opts.pop("prompt_file")
    if prompt_file is not None:
        if opts["prompt"] is not None:
            raise click.UsageError("give -p or -f, not both")
        opts["prompt"] = prompt_file.read()
    run_model(opts)


run_main = _entry(run)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="print metadata and tensors as JSON")
def info(file, as_json):
    """Show a GGUF file's metadata and tensors (FILE may be a known model name)."""
    from gguf_runtime import info as show
    from gguf_runtime.reader import GGUFFile
    path = _resolve(file)
    with GGUFFile(path) as gguf_file:
        click.echo(show.as_json(gguf_file) if as_json else show.as_text(gguf_file))


def _resolve(path_or_name):
    """An existing path as is; otherwise a known model name (gguf-pull)."""
    from gguf_runtime.pull import resolve_model
    return resolve_model(path_or_name)


info_main = _entry(info)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option("--cache-dir", help="where to keep models (default: $GGUF_RUN_CACHE or "
              "~/.cache/gguf-run/models)")
def pull(name, cache_dir):
    """Download a known model (smollm2-135m, gemma3-270m) and print its path."""
    from gguf_runtime.pull import pull as pull_model
    click.echo(pull_model(name, cache_dir))


pull_main = _entry(pull)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", required=True, help="GGUF file, or a known name (gguf-pull)")
@click.option("-p", "--prompt", help="text to tokenize (escapes like \\n processed)")
@click.option("-f", "--file", "prompt_file", type=click.File("r", encoding="utf-8"),
              help="read the text from a file, verbatim")
@click.option("--stdin", "use_stdin", is_flag=True, help="read the text from stdin")
@click.option("--ids", "ids_only", is_flag=True, help="print only the ids, as [id, ...]")
@click.option("--no-bos", is_flag=True, help="do not add a BOS token")
@click.option("--no-parse-special", is_flag=True, help="special-token text stays text")
@click.option("--no-escape", is_flag=True, help="do not process escapes in -p")
@click.option("--show-count", is_flag=True, help="print the number of tokens")
def tokenize(**opts):
    """Tokenize text as llama-tokenize does."""
    from gguf_runtime.tokenize_cmd import run as run_tokenize
    run_tokenize(**opts)


tokenize_main = _entry(tokenize)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", required=True, help="GGUF file, or a known name (gguf-pull)")
@click.option("-f", "--file", "text_file", required=True,
              type=click.File("r", encoding="utf-8"), help="text to score")
@click.option("-c", "--ctx-size", type=click.IntRange(min=8), default=512, show_default=True,
              help="tokens per chunk")
@click.option("--chunks", type=int, default=-1, help="score at most this many chunks")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("-t", "--threads", type=click.IntRange(min=1), help="threads (default: cores)")
def perplexity(model, text_file, ctx_size, chunks, batch_size, threads):
    """Perplexity of a text, as llama-perplexity computes it."""
    from gguf_runtime.model import Model
    from gguf_runtime.perplexity import perplexity as run_perplexity
    text = text_file.read()
    with Model.load(model, n_ctx=ctx_size, n_threads=threads) as m:
        from gguf_runtime import threads as thread_config
        thread_config.apply(m.n_threads)
        run_perplexity(m, text, n_ctx=ctx_size, n_chunks=chunks, n_batch=batch_size)


perplexity_main = _entry(perplexity)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", "models", multiple=True, required=True,
              help="GGUF file or known name; repeat for several")
@click.option("-p", "--n-prompt", type=click.IntRange(min=0), default=512, show_default=True)
@click.option("-n", "--n-gen", type=click.IntRange(min=0), default=128, show_default=True)
@click.option("-t", "--threads", type=click.IntRange(min=1), help="threads (default: cores)")
@click.option("-r", "--repetitions", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("-d", "--n-depth", type=click.IntRange(min=0), default=0, show_default=True,
              help="tokens in the cache before each test (llama-bench's -d)")
@click.option("-ctk", "--cache-type-k", type=click.Choice(["f16", "q8_0"]), default="f16")
@click.option("-ctv", "--cache-type-v", type=click.Choice(["f16", "q8_0"]), default="f16")
@click.option("-o", "--output", type=click.Choice(["md", "json"]), default="md")
def bench(models, n_prompt, n_gen, threads, repetitions, n_depth, cache_type_k, cache_type_v,
          output):
    """Measure prompt processing (ppN) and generation (tgN) as llama-bench does."""
    from gguf_runtime import bench as gguf_bench
    results = []
    for model in models:
        results += gguf_bench.bench_model(model, n_prompt, n_gen, threads, repetitions,
                                          cache_type_k, cache_type_v, n_depth)
    click.echo(gguf_bench.markdown(results) if output == "md" else gguf_bench.to_json(results))


bench_main = _entry(bench)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--imatrix", "imatrix_path", type=click.Path(dir_okay=False),
              help="importance matrix (llama-imatrix's GGUF or .dat format)")
@click.option("--allow-requantize", is_flag=True, help="allow requantizing quantized tensors")
@click.option("--pure", is_flag=True, help="no k-quant mixtures: every tensor in one type")
@click.option("--leave-output-tensor", is_flag=True, help="leave output.weight as it is")
@click.option("--output-tensor-type", help="GGML type for output.weight")
@click.option("--token-embedding-type", help="GGML type for the token embeddings")
@click.option("--tensor-type", "tensor_types", multiple=True,
              help="PATTERN=TYPE: tensors matching the regex get TYPE (repeatable)")
@click.option("-q", "--quiet", is_flag=True, help="no progress output")
@click.argument("args", nargs=-1, required=True)
def quantize(args, imatrix_path, allow_requantize, pure, leave_output_tensor,
             output_tensor_type, token_embedding_type, tensor_types, quiet):
    """Quantize a GGUF model as llama-quantize does.

    ARGS: IN.gguf [OUT.gguf] TYPE [NTHREADS]; TYPE as llama-quantize (Q4_K_M, IQ4_XS, ...)."""
    from gguf_runtime.quantize_cli import run as run_quantize
    run_quantize(args, imatrix_path=imatrix_path, allow_requantize=allow_requantize,
                 pure=pure, leave_output_tensor=leave_output_tensor,
                 output_tensor_type=output_tensor_type,
                 token_embedding_type=token_embedding_type, tensor_types=tensor_types,
                 quiet=quiet)


quantize_main = _entry(quantize)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_dir", metavar="HF_DIR")
@click.option("--outfile", help="output GGUF (default: a name from the model's metadata, in HF_DIR)")
@click.option("--outtype", type=click.Choice(["f32", "f16", "bf16", "q8_0", "auto"]),
              default="auto", show_default=True,
              help="tensor type (auto: bf16 or f16 after the checkpoint's dtype)")
@click.option("-q", "--quiet", is_flag=True, help="no progress output")
def convert(model_dir, outfile, outtype, quiet):
    """Convert a Hugging Face checkpoint (llama, qwen2, qwen3, gemma3) to GGUF,
    as llama.cpp's convert_hf_to_gguf.py does."""
    from gguf_runtime.convert import convert as convert_checkpoint
    out = convert_checkpoint(model_dir, outfile, outtype, quiet)
    if not quiet:
        click.echo(str(out), err=True)


convert_main = _entry(convert)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", required=True, help="GGUF file, or a known name (gguf-pull)")
@click.option("-f", "--file", "text_file", required=True, type=click.Path(dir_okay=False),
              help="text to compute the importance matrix on")
@click.option("-o", "--output", default="imatrix.gguf", show_default=True,
              help="output file (written to a temporary file beside it, then renamed)")
@click.option("-c", "--ctx-size", type=click.IntRange(min=1), default=512, show_default=True,
              help="tokens per chunk")
@click.option("--chunks", type=int, default=-1, help="process at most this many chunks")
@click.option("--output-format", type=click.Choice(["gguf", "dat"]), default="gguf",
              show_default=True, help="llama-imatrix's GGUF format or its legacy .dat")
@click.option("-t", "--threads", type=click.IntRange(min=1), help="threads (default: cores)")
@click.option("-q", "--quiet", is_flag=True, help="no progress output")
def imatrix(model, text_file, output, ctx_size, chunks, output_format, threads, quiet):
    """Compute an importance matrix for gguf-quantize, as llama-imatrix does."""
    from gguf_runtime.imatrix_collect import run as run_imatrix
    run_imatrix(model, text_file, output, n_ctx=ctx_size, n_chunks=chunks,
                output_format=output_format, quiet=quiet, n_threads=threads)


imatrix_main = _entry(imatrix)
