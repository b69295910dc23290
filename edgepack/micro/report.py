"""Rich tables of a microcontroller build: flash and RAM needed versus available, the arena's
method and the latency estimate. Used by `edgepack build` and `edgepack bench`."""

from __future__ import annotations

from typing import Any

KB = 1024


def fit_table(facts: dict[str, Any], title: str = "fit (static figures, not measured on the device)"):
    """Return a rich Table of flash and RAM needed versus available from a build's micro facts."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False)
    for column, justify in (("", "left"), ("needed", "right"), ("available", "right"), ("", "left"), ("made of", "left")):
        table.add_column(column, justify=justify)
    for part, label in (("flash", "flash"), ("ram", "RAM")):
        p = facts["fit"][part]
        verdict = "[green]fits[/]" if p["fits"] else f"[red]over by {(p['needed'] - p['available']) / KB:.1f} KB[/]"
        terms = " + ".join(f"{name} {v / KB:.1f} KB" for name, v in p["terms"].items())
        table.add_row(label, f"{p['needed'] / KB:.1f} KB", f"{p['available'] / KB:.0f} KB", verdict, terms)
    return table


def facts_lines(facts: dict[str, Any]) -> list[str]:
    """Return the arena and latency lines that go under the fit table."""
    arena, lat = facts["arena"], facts["latency"]
    lines = [f"tensor arena {arena['bytes']:,} bytes, {arena['how']}"]
    if arena.get("method") == "measured" and arena.get("planned_activations_bytes") is not None:
        lines.append(
            f"activations {arena['activations_bytes']:,} bytes (edgepack's own plan: {arena['planned_activations_bytes']:,})"
        )
    if lat.get("estimate_ms") is not None:
        lines.append(f"latency about {lat['estimate_ms']:.2f} ms per inference, {lat['how']}")
    return lines


def render_micro_summary(summary: dict[str, Any]):
    """Return a rich renderable of `micro_summary(bundle)`: the fit table and the static figures."""
    from rich.console import Group
    from rich.text import Text

    parts: list = [
        Text(f"{summary['target']}: {summary['note']}", style="bold"),
        fit_table({"fit": {"flash": summary["flash"], "ram": summary["ram"]}}, title=""),
    ]
    parts += [Text(line) for line in facts_lines(summary)]
    host = summary.get("host_check")
    if host:
        agreement = host.get("top1_agreement")
        parts.append(
            Text(
                f"host check in {host['runtime']}: {host.get('n_samples')} samples"
                + (f", top-1 agreement {100 * agreement:.2f}%" if agreement is not None else "")
                + (f", max |err| {host['max_abs_error']:.4g}" if host.get("max_abs_error") is not None else "")
                + " (on the host, not the device)"
            )
        )
    else:
        parts.append(Text("no TFLite Micro host check: tflite-micro was not installed when this bundle was built"))
    return Group(*parts)
