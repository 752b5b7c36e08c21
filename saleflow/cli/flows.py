"""Commands on flow files: `check`, `graph`, `test`, and `deploy` (which
registers a checked flow in the database; `deploy --dry-run` is in
`migrate.py`)."""

from __future__ import annotations

import json

import click

from ..check.rules import check
from ..errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_REJECTED, BadInput, Diagnostic, FlowInvalid, Span
from ..language.parse import parse_flow
from ..wording import plural
from .common import (
    Settings,
    load_checked_flow,
    open_engine,
    output_option,
    pass_settings,
    read_flow_text,
    report_error,
    write_output,
)
from .output import echo_json


def diagnose(text: str, path: str) -> list[Diagnostic]:
    """Every diagnostic for a flow's text: syntax errors, else `check`'s findings."""
    try:
        flow = parse_flow(text, path)
    except FlowInvalid as err:
        return list(err.diagnostics)
    return check(flow)


@click.command("check")
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as a JSON list.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.pass_context
def check_command(ctx: click.Context, flows: tuple[str, ...], as_json: bool, strict: bool) -> None:
    """Check flow files: syntax, names, types and structure.

    Exit 0 when clean, 1 on errors (or warnings with --strict), 2 when a
    file cannot be read.
    """
    unreadable: list[Diagnostic] = []
    found: list[tuple[str, str, list[Diagnostic]]] = []
    for path in flows:
        try:
            text = read_flow_text(path)
        except BadInput as err:
            # Go on with the other files; the exit code still says 2.
            report_error(err)
            unreadable.append(Diagnostic("SF000", "error", Span(path, 0, 0, 0, 0), err.message))
            continue
        found.append((path, text, diagnose(text, path)))

    everything = [d for _, _, diagnostics in found for d in diagnostics]
    errors = sum(d.is_error for d in everything)
    warnings = len(everything) - errors
    if as_json:
        # An unreadable file is an entry too (code SF000, line 0), so that a
        # program reading the list sees every file it asked about.
        listed = [d.to_json() for d in [*unreadable, *everything]]
        click.echo(json.dumps(listed, indent=2, ensure_ascii=False))
    else:
        for path, text, diagnostics in found:
            if not diagnostics:
                click.echo(f"ok: {path}")
            for diagnostic in diagnostics:
                click.echo(diagnostic.render(text))
        if everything:
            click.echo(f"{plural(errors, 'error')}, {plural(warnings, 'warning')}")

    if unreadable:
        ctx.exit(EXIT_BAD_INPUT)
    if errors or (strict and warnings):
        ctx.exit(EXIT_REJECTED)
    ctx.exit(EXIT_OK)


@click.command("graph")
@click.argument("flow_path", metavar="FLOW")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Mermaid flowchart or Graphviz DOT.",
)
@output_option()
@click.option("--exits/--no-exits", default=False, show_default=True, help="Draw exits to final side stages.")
def graph_command(flow_path: str, fmt: str, output: str | None, exits: bool) -> None:
    """Draw a flow: teams, the main line, skips, recycles."""
    from ..views.diagram import to_dot, to_mermaid

    flow = load_checked_flow(flow_path)
    render = to_dot if fmt == "dot" else to_mermaid
    write_output(render(flow, exits=exits), output)


@click.command("test")
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("-k", "select", default=None, metavar="TEXT", help="Only the tests whose name contains TEXT.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as a JSON list.")
@click.pass_context
def test_command(ctx: click.Context, flows: tuple[str, ...], select: str | None, as_json: bool) -> None:
    """Run the test blocks of flow files, each on a fresh in-memory store.

    Exit 0 when every test passes, 1 when any fails, 2 when a file does
    not check.
    """
    from ..runtime.testing import run_tests, summary

    loaded = [load_checked_flow(path) for path in flows]  # every file checks before any test runs
    results = []
    for flow in loaded:
        found = run_tests(flow, select=select)
        results.extend(found)
        if not as_json:
            for result in found:
                click.echo(result.render(flow.source))
    if as_json:
        echo_json([result.to_json() for result in results])
    else:
        click.echo(summary(results))
    ctx.exit(EXIT_OK if all(result.passed for result in results) else EXIT_REJECTED)


@click.command("deploy")
@click.argument("flow_path", metavar="FLOW")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Write nothing: list what changed against the latest deployed version, "
    "and what migrating every lead to it would do now.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"flow", "version", "created"} as JSON; with --dry-run, the plan.',
)
@pass_settings
def deploy_command(settings: Settings, flow_path: str, dry_run: bool, as_json: bool) -> None:
    """Register a flow at the version its flow line declares.

    A file that differs from a deployed version only in comments, layout or
    tests is that version; a changed flow must raise its version above every
    deployed one (exit 2 otherwise, naming the number to use).
    """
    if dry_run:
        from .migrate import deploy_dry_run

        deploy_dry_run(settings, flow_path, as_json)
        return
    with open_engine(settings) as engine:
        deployment = engine.deploy(load_checked_flow(flow_path))
    if as_json:
        echo_json({"flow": deployment.name, "version": deployment.version, "created": deployment.created})
        return
    state = "deployed" if deployment.created else "already deployed, unchanged:"
    click.echo(f"{state} {deployment.name} version {deployment.version}")
