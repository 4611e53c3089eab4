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
