"""`edgepack targets ...`: list, show, validate, create and edit target profiles."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import List, Optional

import typer

from edgepack.cli.options import Json
from edgepack.cli.render import console, err_console, fmt_num, plain, shown_path
from edgepack.errors import ProfileError

app = typer.Typer(help="List, show, validate, create and edit target profiles.", no_args_is_help=True)


def _catalog():
    from edgepack.profile.store import Catalog

    return Catalog()


@app.command("list")
def list_(
    family: Optional[str] = typer.Option(None, "--family", "-f", help="Only this family: phone, raspberry-pi, jetson, microcontroller."),
    as_json: Json = False,
) -> None:
    """List every target profile, which file defines it, and its main settings."""
    from edgepack.profile.schema import Family

    families = [f.value for f in Family]
    if family is not None and family not in families:
        close = difflib.get_close_matches(family, families, n=1)
        hint = f"did you mean {close[0]}?" if close else f"families: {', '.join(families)}"
        raise ProfileError(f"unknown family '{family}'", hint=hint)
    catalog = _catalog()
    rows, broken = [], []
    for name, source in catalog.sources().items():
        try:
            p = catalog.load(name).profile
        except ProfileError as exc:
            broken.append((name, source, exc))
            continue
        if family and p.family.value != family:
            continue
        rows.append(
            {
                "name": name,
                "family": p.family.value,
                "format": p.build.format.value,
                "precision": p.build.precision.value,
                "engine": p.runtime.engine.value,
                "max_p90_latency_ms": p.budgets.max_p90_latency_ms,
                "max_model_kb": p.budgets.max_model_kb,
                "origin": source.origin,
                "file": str(source.path),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        from rich.table import Table

        table = Table(title="target profiles")
        for col in ("name", "family", "format", "precision", "engine", "p90 ms", "model KB", "source"):
            numeric = col in ("p90 ms", "model KB")
            table.add_column(col, justify="right" if numeric else "left", no_wrap=col == "name")
        for r in rows:
            table.add_row(
                plain(r["name"]), r["family"], r["format"], r["precision"], r["engine"],
                fmt_num(r["max_p90_latency_ms"], 0), fmt_num(r["max_model_kb"], 0),
                "built-in" if r["origin"] == "builtin" else plain(shown_path(Path(r["file"]))),
            )
        console.print(table)
    for name, source, exc in broken:
        err_console.print(f"[red]invalid:[/] {plain(name)} ({plain(shown_path(source.path))}): {plain(exc.message)}", highlight=False)
    if broken:
        err_console.print("[yellow]hint:[/] `edgepack targets validate` lists every problem")


@app.command()
def show(
    name: str = typer.Argument(..., help="Target profile name, or the path of a profile file."),
    resolved: bool = typer.Option(False, "--resolved", help="Show every value, with `extends` and defaults resolved."),
) -> None:
    """Print a target profile: the YAML as written, or fully resolved."""
    catalog = _catalog()
    if not resolved:
        source = catalog.find(name)
        typer.echo(f"# {source.origin}: {source.path}")
        typer.echo(source.path.read_text(encoding="utf-8"), nl=False)
        return
    from edgepack.profile.edit import block_yaml

    loaded = catalog.load(name)
    typer.echo("# resolved from: " + " <- ".join(shown_path(p) for p in loaded.chain))
    typer.echo(block_yaml(loaded.profile.model_dump(mode="json", exclude_none=True)), nl=False)


@app.command()
def validate(
    paths: Optional[List[Path]] = typer.Argument(None, help="Profile files to check; default: every known profile."),
) -> None:
    """Validate profiles; exit 2 when any is invalid, listing every problem."""
    catalog = _catalog()
    jobs = [(str(p), lambda p=p: catalog.load_path(p)) for p in paths] if paths else [
        (name, lambda n=name: catalog.load(n)) for name in catalog.sources()
    ]
    bad = 0
    for label, load in jobs:
        try:
            loaded = load()
            console.print(f"[green]ok[/]      {plain(loaded.source.name)} ({plain(shown_path(loaded.source.path))})", highlight=False)
        except ProfileError as exc:
            bad += 1
            err_console.print(f"[red]invalid[/] {plain(label)}: {plain(exc.message)}", highlight=False)
            for line in exc.details:
                err_console.print(f"  {plain(line)}", highlight=False)
            if exc.hint:
                err_console.print(f"  [yellow]hint:[/] {plain(exc.hint)}", highlight=False)
    if bad:
        raise ProfileError(f"{bad} of {len(jobs)} profiles are invalid")


@app.command()
def new(
    name: str = typer.Argument(..., help="Name of the new profile (the file will be NAME.yaml)."),
    base: str = typer.Option(..., "--from", help="The profile it extends."),
    directory: Optional[Path] = typer.Option(
        None, "--dir", help="Where to write it [default: ./targets, or the user profile folder where ./targets holds the built-ins]."
    ),
) -> None:
    """Write a commented profile that extends another; never overwrites."""
    from edgepack.profile.edit import new_profile

    path = new_profile(_catalog(), name, base, directory)
    console.print(f"wrote {plain(shown_path(path))} (extends {plain(base)})", highlight=False)


@app.command("set")
def set_(
    name: str = typer.Argument(..., help="The user profile to edit: its name, or the path of its file."),
    assignments: List[str] = typer.Argument(..., help="KEY=VALUE with dotted keys, e.g. build.precision=fp16."),
) -> None:
    """Edit a user profile in place, keeping comments and key order; invalid results are not written."""
    from edgepack.profile.edit import set_values

    loaded = set_values(_catalog(), name, assignments)
    console.print(f"updated {plain(shown_path(loaded.source.path))}: {plain(', '.join(assignments))}", highlight=False)


@app.command()
def schema() -> None:
    """Print the profile's JSON Schema (for editor completion and checks)."""
    from edgepack.profile.schema import Profile

    typer.echo(json.dumps(Profile.model_json_schema(), indent=2))
