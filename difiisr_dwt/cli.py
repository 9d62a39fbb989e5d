"""``difiisr-dwt`` command line: one subcommand per module in :mod:`difiisr_dwt.commands`."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from difiisr_dwt.errors import ArgumentParser, report_errors

# subcommand -> (module, one-line help). Each module's docstring is its ``--help`` description; it defines
# ``add_arguments(parser)`` and ``run(args)``. Only the chosen subcommand's module is imported, so start-up stays fast.
COMMANDS = {
    "upscale": ("difiisr_dwt.commands.upscale", "x4 super-resolve images (files, folders or globs)"),
    "eval": ("difiisr_dwt.commands.evaluate", "PSNR_Y / SSIM_Y / LPIPS of SR results or of a model, with bicubic"),
    "bench": ("difiisr_dwt.commands.bench", "time and memory: encoder, end to end, tiling; training; GPU path"),
    "export": ("difiisr_dwt.commands.export", "write (and optionally push) a Hub release folder with model card"),
    "convert-vq": ("difiisr_dwt.commands.convert_vq", "convert an original LDM/ResShift VQ-f4 checkpoint"),
}


# reST in docstrings -> plain text for the terminal: roles (:func:`~a.b` -> a.b), inline literals, "Examples::"
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj|ref|doc):`~?([^`<]+?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
# "{pipeline:NAME}" in an option's help: the default of the installed pipeline's __call__ argument NAME
_PIPELINE_DEFAULT = re.compile(r"\{pipeline:(\w+)\}")


def plain_text(text: str) -> str:
    """``text`` with its reST markup removed, for ``--help``: ``:func:`a.b``` -> ``a.b``, double backquotes
    dropped, a literal-block ``::`` shown as ``:``; ``{pipeline:NAME}`` becomes the pipeline's default of
    ``NAME`` (read from its ``__call__`` signature, only when help is shown)."""
    text = _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))
    text = re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)
    if _PIPELINE_DEFAULT.search(text):
        from difiisr_dwt.loading import pipeline_call_defaults

        defaults = pipeline_call_defaults()
        text = _PIPELINE_DEFAULT.sub(lambda match: str(defaults[match.group(1)]), text)
    return text


class PlainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as the description, with its line breaks but without reST markup."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="difiisr-dwt", description="x4 infrared super-resolution (DifIISR-DWT).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name == command:
            chosen = importlib.import_module(module)
            sub = subparsers.add_parser(name, help=help_text, description=chosen.__doc__,
                                        formatter_class=PlainHelpFormatter)
            chosen.add_arguments(sub)
            sub.set_defaults(func=chosen.run)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    return report_errors(lambda: args.func(args))  # the one error boundary: one line, the type's exit status


if __name__ == "__main__":
    sys.exit(main())
