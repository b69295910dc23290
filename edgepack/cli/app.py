"""The `edgepack` command: the root Typer app and the one error boundary.

Library code raises `EdgepackError`; here it becomes one red line, a hint, and an exit code.
Nothing imported at module level may pull in TensorFlow, onnxruntime, tf2onnx or keras.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from edgepack.errors import EXIT_INTERNAL, EdgepackError, debug_enabled


def report_error(exc: EdgepackError) -> None:
    """Print an EdgepackError as the user sees it: one red line, details, the hint."""
    from edgepack.cli.render import err_console, plain

    err_console.print(f"[bold red]error:[/] {plain(exc.message)}", highlight=False)
    for line in exc.details:
        err_console.print(f"  {plain(line)}", highlight=False)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {plain(exc.hint)}", highlight=False)


SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def tidy_help(command, name: str = "edgepack") -> None:
    """Make COMMAND's help (and its subcommands') read as written.

    Typer's rich help took "[default: ...]" in an option's help for markup and dropped it (leaving
    "Timed runs ."), showed "<bool>" as the type of every flag, and "{model}" in usage lines.
    """
    from rich.markup import escape

    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)
        if param.param_type_name == "argument" and param.metavar is None:
            param.metavar = param.name.upper()
            usage = (param.metavar if param.required else f"[{param.metavar}]") + ("..." if param.nargs != 1 else "")
            param.get_usage_pieces = lambda ctx, usage=usage: [usage]  # MODEL, [PATHS]...: as click writes them
        elif getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value: no type to show
    help_option = command.get_help_option(command.context_class(command, info_name=name))
    if help_option is not None:
        help_option.metavar = ""
    for sub_name, sub in (getattr(command, "commands", None) or {}).items():
        tidy_help(sub, sub_name)


class ErrorBoundary(TyperGroup):
    """Turn EdgepackError (and any other failure) into a short message and an exit code."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tidy_help(self)

    def format_help(self, ctx, formatter):
        for param in self.params:  # typer appends its completion options after the group is made
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return super().format_help(ctx, formatter)

    def parse_args(self, ctx, args):
        # typer's --show-completion / --install-completion take a shell's name only where they cannot
        # detect one from the parent processes, and ignore it otherwise: `--show-completion bash`
        # failed in a detached job ("Shell  not supported"). A named shell is used as named.
        if len(args) >= 2 and args[0] in ("--show-completion", "--install-completion") and args[1] in SHELLS:
            from typer.completion import get_completion_script, install

            if args[0] == "--show-completion":
                typer.echo(get_completion_script(prog_name="edgepack", complete_var="_EDGEPACK_COMPLETE", shell=args[1]))
            else:
                shell, path = install(shell=args[1], prog_name="edgepack", complete_var="_EDGEPACK_COMPLETE")
                typer.echo(f"{shell} completion installed in {path}; it takes effect in a new terminal")
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgepackError as exc:
            if debug_enabled():
                raise
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: say so briefly; the traceback is one variable away
            if debug_enabled() or type(exc).__module__.startswith(("click", "typer")):  # usage errors
                raise
            from edgepack.cli.render import err_console, plain

            err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {plain(exc)}", highlight=False)
            err_console.print("[yellow]hint:[/] run again with EDGEPACK_DEBUG=1 for the traceback, and report it")
            raise typer.Exit(EXIT_INTERNAL) from None


app = typer.Typer(
    cls=ErrorBoundary,
    name="edgepack",
    help="Build, package and measure ML models for edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _print_version(value: bool) -> None:
    if value:
        from edgepack._version import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Build, package and measure ML models for edge devices."""


def _register() -> None:
    from edgepack.cli import bench, build, deploy, targets

    app.add_typer(targets.app, name="targets")
    app.command("build")(build.build_command)
    app.command("bench")(bench.bench_command)
    app.command("deploy")(deploy.deploy_command)
    from edgepack.cli import devices

    app.add_typer(devices.app, name="devices")
    from edgepack.cli import results

    app.command("report")(results.report_command)
    from edgepack.cli import tune

    app.command("tune")(tune.tune_command)
    app.command("compare")(results.compare_command)


_register()


def main() -> None:
    """Run the CLI (the `edgepack` console script)."""
    app(prog_name="edgepack")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
