"""The ``costguard`` command line: the same library code paths as the Python API.

Exit codes: 0 success; 1 a costguard error (unreadable ledger, bad recording); 2 invalid input
(bad policy files, bad arguments).
"""

from __future__ import annotations

import difflib
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

from costguard.display import Column, print_table, usd
from costguard.errors import CostguardError, LedgerUrlError, MissingExtraError, PolicyError

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


def _version(value: bool) -> None:
    if value:
        from costguard import __version__

        typer.echo(f"costguard {__version__}")
        raise typer.Exit()


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
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the costguard version and exit."),
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
    from costguard.display import console

    return console()


def _fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {message}", markup=True)
    return typer.Exit(code)


def _open(ledger_url: str | None, ctx: typer.Context | None = None, *, read_only: bool = False) -> Any:
    """The ledger a command names; ``read_only`` for commands that only read (creates nothing)."""
    from costguard.ledger import open_ledger

    if ledger_url is None and ctx is not None:
        ledger_url = _state(ctx).ledger
    try:
        return open_ledger(ledger_url, read_only=read_only, rollup_progress=None if read_only else _rollup_progress)
    except LedgerUrlError as exc:
        raise _fail(str(exc), 2) from exc
    except CostguardError as exc:
        raise _fail(str(exc)) from exc


def _rollup_progress(step: str, done: int, steps: int) -> None:
    """The one-time build of an older ledger's report rollups can take a while: say so."""
    typer.echo(f"building report rollups from the ledger's rows (once): {step} ({done}/{steps})", err=True)


def _known_workflow(name: str, known: Any, option: str) -> None:
    """Exit 2 for a workflow name no policy has, suggesting the closest one."""
    names = sorted(known)
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(names) or '(no workflows in the policies)'}"
    raise _fail(f"{option} {name!r}: no policy names this workflow; {hint}", 2)


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


def _usd(value: Decimal | None) -> str:
    return usd(value)


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
    workflow: Annotated[str, typer.Option("--workflow", help="Workflow the recordings belong to (a name the policies define).")] = "claims-intake",
    into: Annotated[str | None, typer.Option("--into", help="Write the replay into this ledger, at the recorded times (explicit opt-in; the global --ledger and $COSTGUARD_LEDGER are never written).")] = None,
    legacy_ledger: Annotated[str | None, typer.Option("--ledger", hidden=True, help="Same as --into.")] = None,
    budget_from: Annotated[str | None, typer.Option("--budget-from", help="Start today's budget counters where this ledger's stand (read-only) and replay as of now.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (same as the global --quiet).")] = False,
) -> None:
    """Replay recordings through the meter: what would the policies have capped, and saved?

    Each file is a JSON Lines recording of one InvokeAgent response (one boto3 completion event
    per line, chunk bytes base64) or Bedrock model-invocation-log records. By default the replay
    runs in a throwaway ledger with budgets from zero and prints, after the replay summary, the
    spend report of what it replayed: running it twice prints the same thing twice. Nothing is
    sent to AWS.
    """
    import logging
    import tempfile

    quiet = quiet or _state(ctx).quiet
    _check_format(fmt)
    into = into or legacy_ledger
    if into is not None and budget_from is not None:
        raise _fail("--into and --budget-from exclude each other: --into replays against the target's own counters", 2)
    policy_set = _policies_or_exit(policies)
    _known_workflow(workflow, policy_set.names(), "--workflow")
    from costguard.ledger import SQLiteLedger
    from costguard.pricing import PriceCatalog
    from costguard.replay import load_recording
    from costguard.replay import simulate as run_simulation

    try:
        # Every file is read before anything is written: a bad file leaves nothing behind.
        recordings = [load_recording(path) for path in files]
    except CostguardError as exc:
        raise _fail(str(exc)) from exc

    seed = []
    if budget_from is not None:
        source = _open(budget_from, read_only=True)
        try:
            today = datetime.now(UTC)
            periods = {f"day:{today:%Y-%m-%d}", f"month:{today:%Y-%m}"}
            seed = [c for c in source.budget_counters() if c.period in periods]
        except CostguardError as exc:
            raise _fail(str(exc)) from exc
        finally:
            source.close()
    # The meter logs each shadow violation; the summary below shows them grouped instead.
    meter_log = logging.getLogger("costguard")
    previous_level = meter_log.level
    meter_log.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="costguard-simulate-") as scratch:
            if into is not None:
                led = _open(into)
            else:
                led = SQLiteLedger(Path(scratch) / "simulation.db")
                led.seed_budget_counters(seed)
            try:
                pricing = PriceCatalog.load()
                from rich.progress import Progress

                with Progress(transient=True, disable=quiet or len(files) < 2, console=Console(stderr=True)) as progress:
                    task = progress.add_task("replaying", total=len(files))
                    result = run_simulation(recordings, policy_set, workflow, ledger=led, pricing=pricing,
                                            recorded_time=budget_from is None, seed=seed,
                                            on_file=lambda: progress.advance(task))
                spend = None if into is not None else _spend_report(led, "workflow")
            except CostguardError as exc:
                raise _fail(str(exc)) from exc
            finally:
                led.close()
    finally:
        meter_log.setLevel(previous_level)
    if quiet:
        return
    if fmt == "json":
        doc = result.to_dict()
        if spend is not None:
            doc["report"] = spend.to_json_dict()
            # Request ids of a throwaway ledger name nothing anyone can look up, and would make
            # two runs of the same replay differ.
            for part in (doc, doc.get("would_have_capped") or {}):
                for file in part.get("files", []):
                    for violation in file["violations"]:
                        violation.pop("request_id", None)
        typer.echo(json.dumps(doc, indent=2))
        return
    _print_simulation(result, policies)
    if spend is not None:
        _print_report(spend)
    else:
        typer.echo(f"written into {into}; see it with: costguard report --ledger {into}")


def _print_simulation(result: Any, policies: Path) -> None:
    shadow = result.would is not None
    by_file = {r.file: r for r in result.would or []}
    records = []
    for r in result.results:
        would = by_file.get(r.file)
        first = would.caps[0] if would is not None and would.caps else (r.caps[0] if r.caps else None)
        records.append({
            "file": Path(r.file).name,
            "model_calls": r.model_calls_full,
            "cost_full": r.cost_full,
            "capped_by": None if first is None else (f"would: {first.rule}" if shadow else first.rule),
            "at_event": None if first is None else first.at_event,
            "caps": len(would.caps if would is not None else r.caps),
            "kept_calls": would.model_calls_kept if would is not None else r.model_calls_kept,
            "cost_avoided": would.cost_avoided if would is not None else r.cost_avoided,
        })
    avoided_key = "would avoid" if shadow else "cost avoided"
    columns = [
        Column("file"), Column("model_calls", "model calls"), Column("cost_full", "cost as recorded", money=True),
        Column("capped_by", "would have capped" if shadow else "first cap", left=True), Column("at_event", "at event"),
        Column("caps"), Column("kept_calls", "would keep" if shadow else "kept calls"),
        Column("cost_avoided", avoided_key, money=True),
    ]
    total = {"file": "total", "model_calls": sum(r["model_calls"] for r in records),
             "cost_full": sum((r["cost_full"] for r in records), Decimal(0)),
             "caps": sum(r["caps"] for r in records), "kept_calls": sum(r["kept_calls"] for r in records),
             "cost_avoided": sum((r["cost_avoided"] for r in records), Decimal(0))}
    mode = " (shadow mode: nothing was blocked; figures are what enforce mode would do)" if shadow else ""
    print_table(records, columns, f"What-if replay under {policies} (workflow {result.workflow}){mode}",
                drop_order=("at_event", "caps", "model_calls", "kept_calls", "capped_by"), footer=total)
    rules = result.would_rules if shadow else result.rules
    rule_columns = [Column("rule"), Column("hits"), Column("files"), Column("model_calls_avoided", "model calls avoided"),
                    Column("cost_avoided", "would avoid" if shadow else "cost avoided", money=True)]
    print_table([r.to_dict() | {"cost_avoided": r.cost_avoided} for r in rules], rule_columns,
                "Every cap hit, by rule" + (" (would have capped, shadow mode)" if shadow else ""),
                drop_order=("files", "hits", "model_calls_avoided"), empty="no cap was hit")


# -- report -------------------------------------------------------------------------------------


def _parse_day(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise _fail(f"{option} {value!r}: expected a date as YYYY-MM-DD", 2) from exc
    return int(moment.timestamp() * 1000)


_REPORT_FORMATS = (*FORMATS, "html")
_EXTENSIONS = {".json": "json", ".csv": "csv", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}


def _output_format(fmt: str | None, output: Path | None) -> str:
    """--format, else the --output file's extension; a file whose extension names no format is refused."""
    if output is not None:
        inferred = _EXTENSIONS.get(output.suffix.lower())
        if fmt is None:
            if inferred is None:
                raise _fail(f"--output {output}: cannot tell the format from {output.suffix or 'no extension'!r}; "
                            f"use .json, .csv, .md or .html, or give --format", 2)
            return inferred
        if fmt == "table":
            raise _fail("--format table prints to the terminal; give --output a .json, .csv, .md or .html file", 2)
        if inferred is not None and inferred != fmt:
            raise _fail(f"--output {output} looks like {inferred} but --format is {fmt}", 2)
        return fmt
    return fmt or "table"


@app.command("report")
def report(
    ctx: typer.Context,
    ledger: LedgerOption = None,
    since: Annotated[str | None, typer.Option(help="First day (UTC, YYYY-MM-DD), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="Last day (UTC, YYYY-MM-DD), inclusive.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow.")] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="workflow, day, model, user, agent (agent ids; collaborators by name), action (action group response sizes and trim savings) or price-key (model calls by the price key they were priced with)")] = "workflow",
    fmt: Annotated[str | None, typer.Option("--format", help="table, json, csv, markdown or html; default: from the --output extension, else table")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write to this file (.json, .csv, .md, .html) instead of stdout.")] = None,
    policies: Annotated[Path | None, typer.Option("--policies", envvar="COSTGUARD_POLICIES", help="Policies with the monthly budgets: adds budget used % (this month) to a by-workflow report and the burn chart to HTML.")] = None,
) -> None:
    """Spend from the ledger (read-only): sessions, requests, model and tool calls, tokens, cost, violations."""
    from costguard.reports import GROUP_BYS, attach_budget_use, render

    if fmt is not None and fmt not in _REPORT_FORMATS:
        raise _fail(f"--format {fmt!r}: choose one of {', '.join(_REPORT_FORMATS)}", 2)
    fmt = _output_format(fmt, output)
    if group_by not in GROUP_BYS:
        raise _fail(f"--group-by {group_by!r}: choose one of {', '.join(GROUP_BYS)}", 2)
    start, end = _parse_day(since, "--since"), _parse_day(until, "--until")
    if start is not None and end is not None and end < start:
        raise _fail("--until is before --since", 2)
    policy_set = _policies_or_exit(policies) if policies is not None else None
    budgets = _monthly_budgets(policy_set)
    if workflow is not None and policy_set is not None:
        _known_workflow(workflow, policy_set.names(), "--workflow")
    led = _open(ledger, ctx, read_only=True)
    try:
        # A million-row ledger takes seconds: show that something is happening (stderr, transient).
        with Console(stderr=True).status(f"aggregating {led.url} by {group_by}", spinner="dots") if not _state(ctx).quiet else nullcontext():
            result = _spend_report(led, group_by, since_ms=start, until_ms=None if end is None else end + 86_400_000,
                                   workflow=workflow, input_prices=_input_prices() if group_by == "action" else None)
            if budgets:
                month = f"month:{datetime.now(UTC):%Y-%m}"
                spent = {c.workflow: c.spent_usd for c in led.budget_counters() if c.period == month}
                attach_budget_use(result, budgets, spent)
            known = {c.workflow for c in led.budget_counters()} if workflow and not result.rows else set()
    except Exception as exc:  # sqlite3.Error, LedgerError and pandas' DatabaseError: a message, not a traceback
        raise _fail(f"cannot read {led.url}: {exc}") from exc
    finally:
        led.close()
    if workflow and not result.rows:
        if workflow not in known and policy_set is None and known:
            _known_workflow(workflow, known, "--workflow")
        raise _fail(f"no usage for workflow {workflow!r} in {led.url}", 1)
    if fmt == "table":
        _print_report(result)
        return
    text = render(result, fmt, budgets=budgets)
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot write {output}: {exc}") from exc
        _note(ctx, f"wrote {output}")
    else:
        sys.stdout.write(text)


def _spend_report(led: Any, group_by: str, *, since_ms: int | None = None, until_ms: int | None = None,
                  workflow: str | None = None, input_prices: Any = None) -> Any:
    from costguard.reports import ReportQuery

    return led.usage_report(ReportQuery(group_by, since_ms, until_ms, workflow, input_prices))


# Dropped first when a report does not fit the terminal (the key and money columns never are).
REPORT_DROP_ORDER = (
    "cache_write_tokens", "cache_read_tokens", "ttft_p95_ms", "ttft_p50_ms", "latency_p95_ms", "latency_p50_ms",
    "max_bytes_before", "fields_dropped", "items_dropped", "replayed", "replaced", "tool_calls", "sessions",
    "output_tokens", "input_tokens", "bytes_before", "bytes_after", "trimmed", "est_tokens_saved", "workflow",
    "model_calls", "requests", "invocations", "bytes_saved", "budget_used_pct", "shadow_violations", "violations",
)


def _report_column(key: str) -> Column:
    from costguard.reports import is_money_column

    if key == "budget_used_pct":
        return _PctColumn(key, "budget used")
    # is_money_column goes by the "_usd" suffix and misses the estimated saving, which HTML shows
    # as money: shown as dollars and never dropped here too
    return Column(key, money=is_money_column(key))


@dataclass(frozen=True, slots=True)
class _PctColumn(Column):
    def show(self, value: Any) -> str:
        from costguard.display import pct

        return pct(value)


def _print_report(result: Any) -> None:
    from costguard.reports import table_columns

    columns = [_report_column(key) for key in table_columns(result)]
    footer = {columns[0].key: "total", **result.totals()}
    print_table(result.rows, columns, f"Spend by {result.group_by}", drop_order=REPORT_DROP_ORDER,
                empty="the ledger holds no usage for this selection", footer=footer)
    if result.top_sessions:
        session_columns = [Column("session_id", "session"), Column("workflow"), Column("requests"),
                           Column("model_calls", "model calls"), Column("cost_usd", "cost", money=True)]
        print_table(result.top_sessions, session_columns, "Top sessions by cost",
                    drop_order=("model_calls", "requests", "workflow"))


def _input_prices() -> Any:
    from costguard.pricing import PriceCatalog

    catalog = PriceCatalog.load()
    return lambda model_id: catalog.quote(model_id).price.input


def _monthly_budgets(policy_set: Any) -> dict[str, Decimal] | None:
    if policy_set is None:
        return None
    return {
        name: policy.budget.monthly_usd
        for name, policy in policy_set.workflows.items()
        if policy.budget is not None and policy.budget.monthly_usd is not None
    }


def _print_table(records: list[dict[str, Any]], columns: list[str], title: str) -> None:
    from costguard.reports import is_money_column

    print_table(records, [Column(c, money=is_money_column(c)) for c in columns], title,
                drop_order=[c for c in reversed(columns[1:])], empty="the ledger holds no usage for this selection")


# -- budget -------------------------------------------------------------------------------------


@budget_app.command("status")
def budget_status_command(
    ctx: typer.Context,
    ledger: LedgerOption = None,
    policies: Annotated[Path | None, typer.Option("--policies", envvar="COSTGUARD_POLICIES", help="Policy file or directory with the budgets.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Each workflow's daily and monthly budget: spent, reserved, remaining, forecast, kill switch (who set it, when)."""
    _check_format(fmt)
    from costguard.budgets import budget_status, lease_lines
    from costguard.policy import PolicySet

    policy_set = _policies_or_exit(policies) if policies is not None else PolicySet.empty()
    led = _open(ledger, ctx, read_only=True)
    try:
        lines = budget_status(led, policy_set)
        leases = lease_lines(led)
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    finally:
        led.close()
    if fmt == "json":
        typer.echo(json.dumps({"budgets": [line.to_dict() for line in lines], "leases": leases}, indent=2))
        return
    from costguard.display import pct

    records = [
        {
            "workflow": line.workflow,
            "period": line.period_key,
            "budget": line.budget_usd,
            "spent": line.spent_usd,
            "reserved": line.reserved_usd,
            "remaining": line.remaining_usd,
            "used": pct(line.used_pct),
            "forecast": f"{usd(line.forecast_usd)} OVER" if line.budget_usd is not None and line.forecast_usd > line.budget_usd else usd(line.forecast_usd),
            "kill_switch": "BLOCKED" if line.blocked else "-",
        }
        for line in lines
    ]
    columns = [Column("workflow"), Column("period", left=True), Column("budget", money=True), Column("spent", money=True),
               Column("reserved", money=True), Column("remaining", money=True), Column("used", "used %"),
               Column("forecast"), Column("kill_switch", "kill switch", left=True)]
    print_table(records, columns, "Budgets (UTC day and month; forecast: spend so far at the current burn rate to period end)",
                drop_order=("used", "forecast", "kill_switch"), empty="no budgets configured and no spend recorded")
    if leases:
        print_table(
            [{**lease, "periods": " ".join(lease["periods"]), "held": Decimal(lease["held_usd"])} for lease in leases],
            [Column("workflow"), Column("owner", left=True), Column("held", money=True), Column("periods", left=True),
             Column("expires_at", "expires", left=True), Column("state", left=True)],
            "Budget holds (leases: a process's slice or a request's hold; expired ones are given back by the next "
            "reservation or the reconcile sweep)",
            drop_order=("periods", "owner"), empty="no holds",
        )
    # Who set a switch, when and why: whole sentences below the table, never cut to a column.
    for line in lines:
        if line.blocked and line.period == "day":
            _console().print(f"kill switch: {line.workflow} BLOCKED by {line.blocked_by} at "
                             f"{_iso_minute(line.blocked_at_ms)}: {line.block_reason}", markup=False)


def _iso_minute(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _switch_target(ctx: typer.Context, workflow: str, policies: Path | None, force: bool, command: str) -> None:
    """A kill switch on a misspelt name leaves the real workflow running: check it against the policies."""
    if force:
        return
    if policies is None:
        raise _fail(f"budget {command} checks the workflow name against the policies: give --policies PATH "
                    f"(or $COSTGUARD_POLICIES), or --force for a workflow no policy names", 2)
    _known_workflow(workflow, _policies_or_exit(policies).names(), "workflow")


ForceOption = Annotated[bool, typer.Option("--force", help="Accept a workflow name no policy defines.")]
SwitchPolicies = Annotated[Path | None, typer.Option("--policies", envvar="COSTGUARD_POLICIES", help="Policies to check the workflow name against.")]


@budget_app.command("block")
def budget_block(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(help="Workflow to block.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded with who and when).")],
    ledger: LedgerOption = None,
    policies: SwitchPolicies = None,
    force: ForceOption = False,
) -> None:
    """Set a workflow's kill switch: every metered call fails with WorkflowBlocked."""
    if not reason.strip():
        raise _fail("--reason must say why the workflow is blocked", 2)
    _switch_target(ctx, workflow, policies, force, "block")
    led = _open(ledger, ctx)
    try:
        led.set_kill_switch(workflow, reason, getpass.getuser(), int(datetime.now(UTC).timestamp() * 1000))
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    finally:
        led.close()
    _done(ctx, f"blocked {workflow}: {reason}")


@budget_app.command("unblock")
def budget_unblock(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument()],
    ledger: LedgerOption = None,
    policies: SwitchPolicies = None,
    force: ForceOption = False,
) -> None:
    """Clear a workflow's kill switch (an existing ledger only: a missing one is an error)."""
    _switch_target(ctx, workflow, policies, force, "unblock")
    led = _open(ledger, ctx, read_only=True)
    try:
        blocked = any(k.workflow == workflow for k in led.kill_switches(int(datetime.now(UTC).timestamp() * 1000)))
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    finally:
        led.close()
    if not blocked:
        _done(ctx, f"{workflow} was not blocked")
        return
    led = _open(ledger, ctx)
    try:
        led.clear_kill_switch(workflow, getpass.getuser(), int(datetime.now(UTC).timestamp() * 1000))
    except CostguardError as exc:
        raise _fail(str(exc)) from exc
    finally:
        led.close()
    _done(ctx, f"unblocked {workflow}")


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
    led = _open(ledger, ctx, read_only=dry_run)
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
