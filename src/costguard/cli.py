"""The ``costguard`` command line: the same library code paths as the Python API.

Exit codes: 0 success; 1 a costguard error (unreadable ledger, bad recording); 2 invalid input
(bad policy files, bad arguments).
"""

from __future__ import annotations

import getpass
import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from costguard.errors import CostguardError, MissingExtraError, PolicyError

app = typer.Typer(
    help="Meter, cap and report what Amazon Bedrock agents cost.\n\n"
    "Exit codes: 0 success; 1 costguard error (unreadable ledger or recording, AWS call failed); "
    "2 invalid input (bad arguments, dates or policy files).\n\n"
    "Shell completion: costguard --install-completion (bash, zsh, fish, PowerShell).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Validate policy files and export their JSON Schema.", no_args_is_help=True)
pricing_app = typer.Typer(help="Show or refresh the Bedrock price catalog costguard prices with.", no_args_is_help=True)
budget_app = typer.Typer(help="Workflow budgets and kill switches.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(pricing_app, name="pricing")
app.add_typer(budget_app, name="budget")
ledger_app = typer.Typer(help="Ledger administration (the shared DynamoDB table).", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")

LedgerOption = Annotated[
    str | None,
    typer.Option("--ledger", help="Ledger URL (sqlite:///PATH or dynamodb://TABLE); default: the global --ledger, then $COSTGUARD_LEDGER, then the embedded SQLite file."),
]
FORMATS = ("table", "json", "csv", "markdown")


@dataclass(slots=True)
class CliState:
    """Options given before the command (``costguard --quiet --ledger URL report``)."""

    ledger: str | None = None
    quiet: bool = False


@app.callback()
def main_options(
    ctx: typer.Context,
    ledger: Annotated[
        str | None,
        typer.Option("--ledger", envvar="COSTGUARD_LEDGER", help="Ledger URL for every command (a command's own --ledger wins); default: $COSTGUARD_LEDGER, else the embedded SQLite file."),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress bars or status lines; commands that act (simulate, block, refresh, check) print nothing but errors. Data commands still print their data."),
    ] = False,
) -> None:
    ctx.obj = CliState(ledger=ledger, quiet=quiet)


def _state(ctx: typer.Context) -> CliState:
    state = ctx.find_root().obj
    return state if isinstance(state, CliState) else CliState()


def _note(ctx: typer.Context, message: str) -> None:
    """A status line on stderr, unless --quiet."""
    if not _state(ctx).quiet:
        typer.echo(message, err=True)


def _done(ctx: typer.Context, message: str) -> None:
    """The outcome of a command that acts, on stdout, unless --quiet."""
    if not _state(ctx).quiet:
        typer.echo(message)


def _console() -> Console:
    # Piped output (CI logs, files) gets a wide page instead of rich's 80-column default.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 250)


def _fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True, highlight=False).print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _open(ledger_url: str | None, ctx: typer.Context | None = None) -> Any:
    from costguard.ledger import open_ledger

    if ledger_url is None and ctx is not None:
        ledger_url = _state(ctx).ledger
    try:
        return open_ledger(ledger_url)
    except CostguardError as exc:
        raise _fail(str(exc)) from exc


def _policies_or_exit(path: Path) -> Any:
    """Loaded policies, or every error as FILE:LINE: FIELD: MESSAGE and exit 2."""
    from costguard.policy import load_policies

    try:
        return load_policies(path)
    except PolicyError as exc:
        for error in exc.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(2) from exc


def _check_format(fmt: str, allowed: tuple[str, ...] = ("table", "json")) -> None:
    if fmt not in allowed:
        raise _fail(f"--format {fmt!r}: choose one of {', '.join(allowed)}", 2)


def _usd(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001")) if value else Decimal("0"), "f")


# -- policy -------------------------------------------------------------------------------------


@policy_app.command("check")
def policy_check(ctx: typer.Context, paths: Annotated[list[Path], typer.Argument(help="Policy files or directories.")]) -> None:
    """Validate policy files; print every error as FILE:LINE: FIELD: MESSAGE (exit 2 if any)."""
    from costguard.policy import check_policies

    errors = check_policies(paths)
    if errors:
        for error in errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(2)
    _done(ctx, f"ok: {', '.join(str(p) for p in paths)}")


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of a policy file (for editors and the YAML language server)."""
    from costguard.policy import policy_json_schema

    typer.echo(json.dumps(policy_json_schema(), indent=2))


# -- pricing ------------------------------------------------------------------------------------


@pricing_app.command("show")
def pricing_show(
    model: Annotated[str | None, typer.Argument(help="A model id, profile id or ARN; all models when omitted.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Show the rates of this region (default: the catalog's).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Bedrock prices in USD per 1M tokens: every model's dimensions, or all of one model's rates."""
    _check_format(fmt)
    from costguard.pricing import PriceCatalog
    from costguard.pricing.listing import describe_set, model_detail, model_rows

    try:
        catalog = PriceCatalog.load()
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    header = {"source": catalog.source, "retrieved": catalog.retrieved, "region": region or catalog.region}
    if model:
        detail = model_detail(catalog, model, region)
        if fmt == "json":
            typer.echo(json.dumps({**header, "models": [detail]}, indent=2))
            return
        title = detail.get("name") or detail["model_id"]
        if not detail["priced"]:
            title = f"{model} (not in catalog: fallback price)"
        table = Table(title=f"{title}, {detail['region']}, USD per 1M tokens ({catalog.retrieved})")
        for column in ("rates", "input", "output", "cache read", "cache write 5m", "cache write 1h"):
            table.add_column(column, justify="left" if column == "rates" else "right")
        for name, rates in detail["rates"].items():
            table.add_row(describe_set(name), rates["input"], rates["output"], rates.get("cache_read", "-"),
                          rates.get("cache_write_5m", "-"), rates.get("cache_write_1h", "-"))
        notes = [f"flags: {', '.join(detail['flags'])}"] if detail["flags"] else []
        if detail.get("long_context_threshold"):
            notes.append(f"long context above {detail['long_context_threshold']:,} input+cache tokens")
        if detail.get("status"):
            notes.append(f"status: {detail['status']}" + (f" (end of life {detail['end_of_life']})" if detail.get("end_of_life") else ""))
        table.caption = "; ".join(notes) or None
        _console().print(table)
        return
    rows = model_rows(catalog, region)
    if fmt == "json":
        typer.echo(json.dumps({**header, "models": rows}, indent=2))
        return
    table = Table(title=f"Bedrock models priced by costguard ({catalog.retrieved})" + (f", {region}, USD per 1M tokens" if region else ""))
    # An id is what a user copies into `pricing show MODEL`: never cut it, let the other columns wrap.
    table.add_column("model", no_wrap=True, min_width=max(len(row["model_id"]) for row in rows))
    for column in ["name", "provider", "status", "dimensions"] + (["input", "output"] if region else ["regions"]):
        table.add_column(column, justify="right" if column in ("input", "output") else "left")
    for row in rows:
        status = row["status"] + (f" {row['end_of_life']}" if row["end_of_life"] else "")
        cells = [row["model_id"], row["name"] or "-", row["provider"] or "-", status, ", ".join(row["dimensions"][2:]) or "-"]
        if region:
            assumed = " *" if row["region_assumed"] else ""
            cells += [row["input"] + assumed, row["output"] + assumed]
        else:
            cells.append(", ".join(row["regions"]))
        table.add_row(*cells)
    if region:
        table.caption = f"* no published {region} figure: priced at the {catalog.region} figure (region_assumed)"
    _console().print(table)


@pricing_app.command("refresh")
def pricing_refresh(
    ctx: typer.Context,
    region: Annotated[str, typer.Option("--region", help="Region whose on-demand prices to read.")] = "us-east-1",
    output: Annotated[Path | None, typer.Option("--output", help="Override catalog to write; default: $COSTGUARD_PRICING, else pricing.json in the data directory.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile for the Price List API call.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Read current Bedrock prices from the AWS Price List API into the local override catalog.

    Needs pricing:GetProducts, and bedrock:ListFoundationModels and bedrock:ListInferenceProfiles
    in --region to find models the shipped catalog does not know. On any Price List failure
    nothing is written and the catalog in use (the shipped one, or the last successful refresh)
    stays in use.
    """
    from costguard.pricing import PriceCatalog
    from costguard.pricing.refresh import refresh_catalog

    _check_format(fmt)
    state = _state(ctx)
    err = Console(stderr=True, highlight=False)
    try:
        known = PriceCatalog.shipped()
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    try:
        with err.status(f"reading the Price List for {region}", spinner="dots") if not state.quiet else nullcontext():
            result = refresh_catalog(region, session=_aws_session(profile), known=known, output=output, write=not dry_run)
    except CostguardError as exc:
        # Loud on purpose: a silent failure here means weeks of spend priced at stale rates.
        err.print(f"[bold red]PRICE REFRESH FAILED:[/bold red] {exc}")
        err.print(
            "[bold red]Nothing was written; costguard keeps pricing with the catalog in use[/bold red] "
            f"(shipped: {known.source}, retrieved {known.retrieved}; plus any earlier override)."
        )
        raise typer.Exit(1) from exc
    if fmt == "json":
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    if state.quiet:
        return
    table = Table(title=f"Price changes from the Price List, {region}, USD per 1M tokens")
    for column in ("model", "input", "output", "cache read", "cache write"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model_id, (before, after) in sorted(result.changed.items()):
        def cell(old: Decimal | None, new: Decimal | None) -> str:
            return str(new or "-") if old == new else f"{old or '-'} -> [bold]{new or '-'}[/bold]"
        table.add_row(model_id, cell(before.input, after.input), cell(before.output, after.output),
                      cell(before.cache_read, after.cache_read), cell(before.cache_write, after.cache_write))
    if not result.changed:
        table.caption = "no price differs from the shipped catalog"
    _console().print(table)
    summary = (f"{len(result.updated)} models priced from {result.products_seen} products in {result.requests} requests; "
               f"{len(result.new_models)} not in the shipped catalog; "
               f"{len(result.unmatched_names)} product names match no Bedrock model; {len(result.incomplete)} models incomplete")
    typer.echo(summary, err=True)
    if result.new_models:
        typer.echo("new: " + ", ".join(result.new_models), err=True)
    for warning in result.warnings:
        err.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    if result.unmatched_names:
        typer.echo("unmatched: " + ", ".join(result.unmatched_names[:20]) + (" ..." if len(result.unmatched_names) > 20 else ""), err=True)
    typer.echo("dry run: nothing written" if dry_run else f"wrote {result.written_to}", err=True)


def _aws_session(profile: str | None) -> Any:
    """A boto3 session; kept in one function so tests can hand the CLI a stubbed one."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.session.Session(profile_name=profile)
    except BotoCoreError as exc:
        raise _fail(f"AWS profile {profile!r}: {exc}") from exc


# -- simulate -----------------------------------------------------------------------------------


@app.command("simulate")
def simulate(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Recordings: InvokeAgent responses (JSON Lines, one completion event per line) or Bedrock model-invocation-log records.")],
    policies: Annotated[Path, typer.Option("--policies", help="Policy file or directory to replay under.")],
    workflow: Annotated[str, typer.Option("--workflow", help="Workflow the recordings belong to.")] = "claims-intake",
    ledger: LedgerOption = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (same as the global --quiet).")] = False,
) -> None:
    """Replay recordings through the meter: what would the policies have capped, and saved?

    Each file is a JSON Lines recording of one InvokeAgent response (one boto3 completion event
    per line, chunk bytes base64) or Bedrock model-invocation-log records. Usage is written to the
    ledger as if the calls had run under the policies; nothing is sent to AWS.
    """
    quiet = quiet or _state(ctx).quiet
    _check_format(fmt)
    from costguard.meter import Guard
    from costguard.pricing import PriceCatalog
    from costguard.replay import replay_file

    policy_set = _policies_or_exit(policies)
    try:
        pricing = PriceCatalog.load()
        guard = Guard(policy_set, ledger=_open(ledger, ctx), pricing=pricing)
        results = []
        from rich.progress import Progress

        with Progress(transient=True, disable=quiet or len(files) < 2, console=Console(stderr=True)) as progress:
            task = progress.add_task("replaying", total=len(files))
            for path in files:
                results.append(replay_file(path, guard, workflow, pricing=pricing))
                progress.advance(task)
        guard.close()
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    if quiet:
        return
    total_full = sum((r.cost_full for r in results), Decimal(0))
    total_avoided = sum((r.cost_avoided for r in results), Decimal(0))
    if fmt == "json":
        typer.echo(json.dumps({"files": [r.to_dict() for r in results], "total": {
            "cost_full_usd": format(total_full, "f"), "cost_avoided_usd": format(total_avoided, "f")}}, indent=2))
        return
    table = Table(title=f"What-if replay under {policies} (workflow {workflow})")
    for column in ("file", "model calls", "cost as recorded", "capped by", "at event", "kept calls", "cost avoided"):
        table.add_column(column, justify="left" if column in ("file", "capped by") else "right")
    for r in results:
        table.add_row(Path(r.file).name, str(r.model_calls_full), _usd(r.cost_full), r.capped_by or "-",
                      str(r.capped_at_event or "-"), str(r.model_calls_kept), _usd(r.cost_avoided))
    table.add_row("total", str(sum(r.model_calls_full for r in results)), _usd(total_full), "", "",
                  str(sum(r.model_calls_kept for r in results)), _usd(total_avoided), style="bold")
    _console().print(table)


# -- report -------------------------------------------------------------------------------------


def _parse_day(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise _fail(f"{option} {value!r}: expected a date as YYYY-MM-DD", 2) from exc
    return int(moment.timestamp() * 1000)


@app.command("report")
def report(
    ctx: typer.Context,
    ledger: LedgerOption = None,
    since: Annotated[str | None, typer.Option(help="First day (UTC, YYYY-MM-DD), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="Last day (UTC, YYYY-MM-DD), inclusive.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow.")] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="workflow, day, model, user, agent or action (action group response sizes and trim savings)")] = "workflow",
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv, markdown or html")] = "table",
    output: Annotated[Path | None, typer.Option("--output", help="Write to this file instead of stdout.")] = None,
    policies: Annotated[Path | None, typer.Option("--policies", envvar="COSTGUARD_POLICIES", help="Policies with the monthly budgets: adds budget used % (this month) to a by-workflow report and the burn chart to HTML.")] = None,
) -> None:
    """Spend from the ledger: sessions, requests, model and tool calls, tokens, cost, violations."""
    from costguard.ledger import SQLiteLedger
    from costguard.reports import GROUP_BYS, attach_budget_use, render, table_columns, usage_report

    if fmt not in (*FORMATS, "html"):
        raise _fail(f"--format {fmt!r}: choose one of {', '.join((*FORMATS, 'html'))}", 2)
    if group_by not in GROUP_BYS:
        raise _fail(f"--group-by {group_by!r}: choose one of {', '.join(GROUP_BYS)}", 2)
    start, end = _parse_day(since, "--since"), _parse_day(until, "--until")
    if start is not None and end is not None and end < start:
        raise _fail("--until is before --since", 2)
    budgets = _monthly_budgets(policies)
    led = _open(ledger, ctx)
    if not isinstance(led, SQLiteLedger):
        led.close()
        raise _fail(
            f"report aggregates a SQLite ledger; {led.url} is not one. For the shared DynamoDB ledger "
            "use `costguard reconcile --format csv` (per workflow and day), `costguard budget status`, "
            "or the reports the scheduled Lambda writes to S3."
        )
    try:
        # A million-row ledger takes seconds: show that something is happening (stderr, transient).
        with Console(stderr=True).status(f"aggregating {led.url} by {group_by}", spinner="dots") if not _state(ctx).quiet else nullcontext():
            result = usage_report(
                led.connection(),
                since_ms=start,
                until_ms=None if end is None else end + 86_400_000,
                workflow=workflow,
                group_by=group_by,
                input_price_per_million=_input_prices() if group_by == "action" else None,
            )
            if budgets:
                month = f"month:{datetime.now(UTC):%Y-%m}"
                spent = {c.workflow: c.spent_usd for c in led.budget_counters() if c.period == month}
                attach_budget_use(result, budgets, spent)
    except Exception as exc:  # sqlite3.Error and pandas' DatabaseError: a message, not a traceback
        raise _fail(f"cannot read {led.url}: {exc}") from exc
    finally:
        led.close()
    if workflow and not result.rows:
        raise _fail(f"no usage for workflow {workflow!r} in {led.url}", 1)
    if fmt == "table" and output is None:
        _print_table(result.rows, table_columns(result), f"Spend by {group_by}")
        if result.top_sessions:
            _print_table(result.top_sessions, ["session_id", "workflow", "requests", "model_calls", "cost_usd"], "Top sessions by cost")
        return
    text = render(result, "markdown" if fmt == "table" else fmt, budgets=budgets)
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot write {output}: {exc}") from exc
        _note(ctx, f"wrote {output}")
    else:
        sys.stdout.write(text)


def _input_prices() -> Any:
    from costguard.pricing import PriceCatalog

    catalog = PriceCatalog.load()
    return lambda model_id: catalog.quote(model_id).price.input


def _monthly_budgets(policies: Path | None) -> dict[str, Decimal] | None:
    if policies is None:
        return None
    policy_set = _policies_or_exit(policies)
    return {
        name: policy.budget.monthly_usd
        for name, policy in policy_set.workflows.items()
        if policy.budget is not None and policy.budget.monthly_usd is not None
    }


def _print_table(records: list[dict[str, Any]], columns: list[str], title: str) -> None:
    table = Table(title=title)
    for column in columns:
        first = column == columns[0]
        table.add_column(column.replace("_", " "), justify="left" if first else "right", no_wrap=first)
    for record in records:
        table.add_row(*("-" if record.get(column) is None else str(record[column]) for column in columns))
    if not records:
        table.caption = "the ledger holds no usage for this selection"
    _console().print(table)


# -- budget -------------------------------------------------------------------------------------


@budget_app.command("status")
def budget_status_command(
    ctx: typer.Context,
    ledger: LedgerOption = None,
    policies: Annotated[Path | None, typer.Option("--policies", envvar="COSTGUARD_POLICIES", help="Policy file or directory with the budgets.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Each workflow's daily and monthly budget: spent, reserved, remaining, forecast, kill switch."""
    _check_format(fmt)
    from costguard.budgets import budget_status
    from costguard.policy import PolicySet

    policy_set = _policies_or_exit(policies) if policies is not None else PolicySet.empty()
    led = _open(ledger, ctx)
    try:
        lines = budget_status(led, policy_set)
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    finally:
        led.close()
    if fmt == "json":
        typer.echo(json.dumps({"budgets": [line.to_dict() for line in lines]}, indent=2))
        return
    table = Table(title="Budgets (UTC periods; forecast = spend so far at the current burn rate to period end)")
    for column in ("workflow", "period", "budget", "spent", "reserved", "remaining", "used %", "forecast", "kill switch"):
        table.add_column(column, justify="left" if column in ("workflow", "period", "kill switch") else "right")
    for line in lines:
        over = line.budget_usd is not None and line.forecast_usd > line.budget_usd
        table.add_row(
            line.workflow,
            f"{line.period} {line.period_key}",
            _usd(line.budget_usd) if line.budget_usd is not None else "-",
            _usd(line.spent_usd),
            _usd(line.reserved_usd),
            _usd(line.remaining_usd) if line.remaining_usd is not None else "-",
            str(line.used_pct) if line.used_pct is not None else "-",
            f"[red]{_usd(line.forecast_usd)}[/red]" if over else _usd(line.forecast_usd),
            f"[red]BLOCKED[/red] {line.block_reason}" if line.blocked else "-",
        )
    if not lines:
        table.caption = "no budgets configured and no spend recorded"
    _console().print(table)


@budget_app.command("block")
def budget_block(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(help="Workflow to block.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded with who and when).")],
    ledger: LedgerOption = None,
) -> None:
    """Set a workflow's kill switch: every metered call fails with WorkflowBlocked."""
    if not reason.strip():
        raise _fail("--reason must say why the workflow is blocked", 2)
    led = _open(ledger, ctx)
    try:
        led.set_kill_switch(workflow, reason, getpass.getuser(), int(datetime.now(UTC).timestamp() * 1000))
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    finally:
        led.close()
    _done(ctx, f"blocked {workflow}: {reason}")


@budget_app.command("unblock")
def budget_unblock(ctx: typer.Context, workflow: Annotated[str, typer.Argument()], ledger: LedgerOption = None) -> None:
    """Clear a workflow's kill switch."""
    led = _open(ledger, ctx)
    try:
        cleared = led.clear_kill_switch(workflow, getpass.getuser(), int(datetime.now(UTC).timestamp() * 1000))
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    finally:
        led.close()
    _done(ctx, f"unblocked {workflow}" if cleared else f"{workflow} was not blocked")


# -- reconcile ----------------------------------------------------------------------------------


@app.command("reconcile")
def reconcile_command(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="First day (UTC, YYYY-MM-DD); default: yesterday.")] = None,
    until: Annotated[str | None, typer.Option(help="Last day (UTC, YYYY-MM-DD), inclusive; default: today.")] = None,
    window: Annotated[str, typer.Option("--window", help="recent (yesterday and today) or month (month to date) when no dates are given.")] = "recent",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Set no kill switch, send no alert, write no report: say what would happen.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv (the per-workflow, per-day frame)")] = "table",
    policies: Annotated[Path | None, typer.Option("--policies", envvar="COSTGUARD_POLICIES", help="Policy file or directory with the budgets.")] = None,
    ledger: LedgerOption = None,
    topic_arn: Annotated[str | None, typer.Option("--topic-arn", envvar="COSTGUARD_TOPIC_ARN", help="SNS topic for alerts; none: alerts are printed, not sent.")] = None,
    bucket: Annotated[str | None, typer.Option("--bucket", envvar="COSTGUARD_REPORT_BUCKET", help="S3 bucket for the reports; none: no reports written.")] = None,
    prefix: Annotated[str, typer.Option("--prefix", envvar="COSTGUARD_REPORT_PREFIX", help="S3 key prefix for the reports.")] = "costguard/reports",
    tag_key: Annotated[list[str] | None, typer.Option("--tag-key", help="Cost allocation tag that names the workflow; repeat it to try several in order (an application inference profile tag, then an IAM principal tag such as iamPrincipal/team). See docs/tagging.md.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Region of the CloudWatch metrics; default: the session's.")] = None,
    include_lambda: Annotated[bool, typer.Option("--lambda", help="Also compare the AWS Lambda spend of functions carrying the tag with what action_guard metered (one more Cost Explorer query).")] = False,
) -> None:
    """Join Cost Explorer (billed), CloudWatch (what Bedrock saw) and the ledger (metered).

    The same job the scheduled Lambda runs: per workflow and day, metered and billed cost, drift,
    Bedrock tokens no meter saw, throttles, budget burn and month-end forecast; then kill switches
    for exhausted hard budgets, deduplicated SNS alerts and S3 reports. Needs ce:GetCostAndUsage,
    ce:GetDimensionValues, cloudwatch:GetMetricData and cloudwatch:ListMetrics (each Cost Explorer
    request costs $0.01).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from costguard.jobs import parse_window, run_reconciliation
    from costguard.policy import PolicySet
    from costguard.reconcile import Reconciler, tag_keys_of

    _check_format(fmt, ("table", "json", "csv"))
    event: dict[str, Any] = {"window": window}
    if since is not None:
        event["since"] = since
    if until is not None:
        event["until"] = until
    try:
        span = parse_window(event, datetime.now(UTC).date())
    except CostguardError as exc:
        raise _fail(str(exc), 2) from exc
    try:
        tag_keys = tag_keys_of(tag_key or ["costguard:workflow"])
    except CostguardError as exc:
        raise _fail(str(exc), 2) from exc
    policy_set = _policies_or_exit(policies) if policies is not None else PolicySet.empty()
    session = _aws_session(profile)
    led = _open(ledger, ctx)
    try:
        reconciler = Reconciler(led, policy_set, session=session, tag_key=tag_keys, region_name=region,
                                include_lambda=include_lambda)
        with Console(stderr=True).status("reconciling", spinner="dots") if not _state(ctx).quiet else nullcontext():
            summary = run_reconciliation(reconciler, led, policy_set, span, topic_arn=topic_arn, bucket=bucket,
                                         prefix=prefix, session=session, dry_run=dry_run, tag_key=tag_keys[0])
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    except (BotoCoreError, ClientError) as exc:
        raise _fail(f"AWS call failed: {exc}") from exc
    finally:
        led.close()
    frame = summary.result.frame
    records = _records(frame)
    if fmt == "json":
        doc = summary.to_dict()
        doc["frame"] = records
        if summary.result.lambda_spend is not None:
            doc["lambda_spend"] = _records(summary.result.lambda_spend)
        doc["alert_list"] = [
            {"key": a.key, "kind": a.kind, "workflow": a.workflow, "period": a.period, "subject": a.subject, "message": a.message}
            for a in summary.alerts
        ]
        typer.echo(json.dumps(doc, indent=2, default=str))
    elif fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    else:
        columns = ["workflow", "day", "metered_cost_usd", "billed_cost_usd", "estimated", "drift_usd", "drift_pct",
                   "attribution", "throttles", "budget_daily_usd", "month_to_date_usd", "forecast_month_end_usd"]
        _print_table(records, [c for c in columns if c in frame.columns],
                     f"Reconciliation {summary.window_start} to {summary.window_end} (end exclusive)")
        verb = "would send" if dry_run or not topic_arn else "sent"
        alert_rows = [{"kind": a.kind, "workflow": a.workflow, "period": a.period, "subject": a.subject} for a in summary.alerts]
        _print_table(alert_rows, ["kind", "workflow", "period", "subject"], f"Alerts ({verb}; already-sent ones are skipped)")
        for action in summary.actions:
            typer.echo(f"{'would ' if dry_run else ''}{action.action}: {action.workflow}")
        if summary.result.lambda_spend is not None:
            spend = summary.result.lambda_spend
            _print_table(_records(spend), list(spend.columns), "Action group Lambda spend (metered by action_guard, billed by Cost Explorer)")
    for warning in getattr(summary.result, "warnings", []) or []:
        _note(ctx, f"warning: {warning}")
    for error in summary.errors:
        typer.echo(f"error: {error}", err=True)
    if summary.errors:
        raise typer.Exit(1)


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: _json_cell(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _json_cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


# -- ledger -------------------------------------------------------------------------------------


@ledger_app.command("create-table")
def ledger_create_table(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="DynamoDB table name.")],
    region: Annotated[str | None, typer.Option("--region", help="AWS region; default: the session's.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
    endpoint_url: Annotated[str | None, typer.Option("--endpoint-url", help="DynamoDB endpoint (DynamoDB Local, moto).")] = None,
) -> None:
    """Create the shared ledger table: on-demand billing, TTL on usage rows, point-in-time recovery.

    Safe to re-run: an existing table gets TTL and point-in-time recovery switched on if they
    were off. Then point callers at it with --ledger dynamodb://TABLE or $COSTGUARD_LEDGER.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from costguard.ledger.dynamodb import create_table

    session = _aws_session(profile)
    try:
        client = session.client("dynamodb", region_name=region, endpoint_url=endpoint_url)
        description = create_table(table, client=client)
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    except (BotoCoreError, ClientError) as exc:  # e.g. NoRegionError: a message, not a traceback
        raise _fail(f"cannot create {table}: {exc}") from exc
    _done(ctx, f"ready: dynamodb://{table} ({description.get('TableArn', table)})")


def main() -> None:
    try:
        app()
    except MissingExtraError as exc:  # e.g. `report` on a core install: what to install, not a traceback
        typer.echo(f"error: {exc}", err=True)  # plain: rich would read "[reports]" as markup
        raise SystemExit(1) from exc
