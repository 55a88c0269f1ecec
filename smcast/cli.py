"""The ``smcast`` command line: a thin layer over importable functions.

Every command takes ``--config FILE`` (default ``$SMCAST_CONFIG``, else the built-in offline demo
configuration), ``--set key.path=value`` overrides and ``--verbose``; logs go to stderr, the
one-line summary to stdout, and errors exit with the codes listed in ``smcast.errors``.
"""

from __future__ import annotations

import errno
import functools
import logging
import signal
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import click

from smcast import __version__
from smcast.clock import utc_today
from smcast.config import Config, load_config
from smcast.errors import ConfigError, SmcastError, Terminated

log = logging.getLogger("smcast")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose + 1, 2)  # default INFO, -v DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("numcodecs", "asyncio", "fsspec", "urllib3", "cfgrib", "multiurl"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def common(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --config/--set/--verbose, load the config, and map smcast errors to exit codes."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False),
                  help="YAML config file (default: $SMCAST_CONFIG, else the offline demo).")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override a config value, e.g. --set grid.resolution=1 (repeatable).")
    @click.option("-v", "--verbose", count=True, help="More log output (debug).")
    @functools.wraps(func)
    def wrapper(config_path: str | None, overrides: tuple[str, ...], verbose: int,
                **kwargs: Any) -> None:
        _setup_logging(verbose)
        signal.signal(signal.SIGTERM, _terminate)
        try:
            cfg = load_config(config_path, overrides)
            func(cfg, **kwargs)
        except SmcastError as exc:
            click.echo(f"smcast: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("smcast: interrupted", err=True)
            sys.exit(130)
        except Terminated:
            click.echo("smcast: terminated (SIGTERM); nothing partial was left behind", err=True)
            sys.exit(Terminated.exit_code)
        except Exception as exc:  # noqa: BLE001 — report, never a silent failure
            log.debug("unexpected error", exc_info=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # environment, not a bug
                click.echo(f"smcast: error: {exc}; free space on that disk and run the command "
                           "again", err=True)
                sys.exit(1)
            click.echo(f"smcast: unexpected error: {type(exc).__name__}: {exc} (run with -v "
                       "for the traceback)", err=True)
            sys.exit(1)

    return wrapper


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM → :class:`Terminated`, which unwinds the run like Ctrl-C (temporary files and
    staging folders are removed on the way out)."""
    raise Terminated()


def parse_day(text: str | None, what: str) -> date | None:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (UTC) → date; ConfigError otherwise."""
    if text is None:
        return None
    today = utc_today()
    if text == "today":
        return today
    if text == "yesterday":
        return today - timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a date; use YYYY-MM-DD, 'today' or "
                          "'yesterday'") from None


@click.group()
@click.version_option(__version__, prog_name="smcast")
def main() -> None:
    """smcast: physically-guided LSTM soil-moisture forecasts from ERA5-Land."""


@main.command()
@click.option("--start", required=True, help="First day, YYYY-MM-DD (UTC).")
@click.option("--end", required=True, help="Last day, YYYY-MM-DD, 'today' or 'yesterday'.")
@click.option("--source", "source_name", help="Source name (demo, directory, cds); default from "
              "the config.")
@click.option("--input", "input_dir", type=click.Path(file_okay=False),
              help="Folder of ERA5-Land files for the directory source.")
@click.option("--store", "store_path", type=click.Path(), help="Store path (overrides the "
              "config); xarray.open_zarr(PATH) opens the result.")
@common
def ingest(cfg: Config, start: str, end: str, source_name: str | None, input_dir: str | None,
           store_path: str | None) -> None:
    """Bring days START…END from the source into the daily 0.5° store."""
    from smcast.ingest.pipeline import ingest as run_ingest

    if input_dir:
        cfg.source.directory.path = Path(input_dir)
        source_name = source_name or "directory"
    summary = run_ingest(cfg, parse_day(start, "--start"), parse_day(end, "--end"),
                         source_name, Path(store_path) if store_path else None)
    click.echo(summary.line())


@main.command()
@click.option("--store", "store_path", type=click.Path(), help="Store path (overrides the config).")
@common
def info(cfg: Config, store_path: str | None) -> None:
    """Show the resolved config, the store's coverage and gaps, models and the GPU."""
    from smcast.info import collect_info

    click.echo(collect_info(cfg, Path(store_path) if store_path else None))


@main.command()
@click.option("--date", "issue_date", default="today", show_default=True,
              help="Issue date: YYYY-MM-DD, 'today' or 'yesterday' (UTC).")
@click.option("--model", "model_name", help="Model name (default: the current model).")
@click.option("--output", type=click.Path(file_okay=False),
              help="Output directory (default: forecast.output_dir or <data_dir>/forecasts).")
@click.option("--force", is_flag=True, help="Redo an issue date that is already done.")
@click.option("--catch-up", "catch_up", is_flag=True, help="Also produce the issue dates of the "
              "last operations.catch_up_days days that lack a forecast, oldest first.")
@click.option("--verify", "then_verify", is_flag=True,
              help="Then run `smcast verify` (what the scheduled daily job does).")
@common
def forecast(cfg: Config, issue_date: str, model_name: str | None, output: str | None,
             force: bool, catch_up: bool, then_verify: bool) -> None:
    """Forecast soil moisture over every land cell for one issue date."""
    from smcast.catchup import run_catch_up
    from smcast.errors import NOTHING_TO_DO
    from smcast.forecast import run_forecast

    issue = parse_day(issue_date, "--date")
    out = Path(output) if output else None
    if catch_up:
        results = run_catch_up(cfg, issue, model_name, out, force)
    else:
        results = [run_forecast(cfg, issue, model_name, out, force)]
    for result in results:
        click.echo(result.line())
    if then_verify:
        from smcast.verify import run_verify

        click.echo(run_verify(cfg, out).line())
    if all(r.status != "done" for r in results):
        sys.exit(NOTHING_TO_DO)


@main.command()
@click.option("--output", type=click.Path(file_okay=False),
              help="Output directory of the forecasts (default: as for forecast).")
@common
def verify(cfg: Config, output: str | None) -> None:
    """Fill the Eq. 19 flags of forecasts whose valid days reached the store, and score them."""
    from smcast.verify import run_verify

    click.echo(run_verify(cfg, Path(output) if output else None).line())


@main.command()
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3660),
              help="Valid days up to today to cover.")
@click.option("--model", "model_name", help="Only this model (default: every model).")
@click.option("--output", type=click.Path(file_okay=False),
              help="Folder for the report (default: <output_dir>/reports/<today>).")
@common
def report(cfg: Config, days: int, model_name: str | None, output: str | None) -> None:
    """Render the verification table: skill against time and lead (PNG, Markdown, HTML)."""
    from smcast.ledger import Ledger
    from smcast.report import render_report, window

    today = utc_today()
    first, last = window(days, today)
    rows = Ledger.for_config(cfg).verification(first, last, model_name)
    out = Path(output) if output else cfg.output_dir / "reports" / str(today)
    click.echo(render_report(rows, out, days, today).line())


@main.command()
@click.option("--runs", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="How many recent runs to list.")
@common
def status(cfg: Config, runs: int) -> None:
    """Health at a glance; exits 1 when the last scheduled run failed or forecasts are stale."""
    from smcast.status import collect_status

    report_ = collect_status(cfg, runs)
    click.echo(report_.text())
    if not report_.healthy:
        sys.exit(1)


@main.command()
@common
def schedule(cfg: Config) -> None:
    """Run the daily job on the configured cron schedule until SIGTERM/SIGINT (a daemon)."""
    from smcast.schedule import serve

    click.echo(serve(cfg))


@main.command()
@click.option("--variant", type=click.Choice(["lstm", "phy", "phys"]),
              help="Model variant (default: model.variant).")
@click.option("--start", help="First training day (default: the store's first complete day).")
@click.option("--end", help="Last training/validation day (default: test_days before the "
              "store's latest complete day).")
@click.option("--epochs", type=int, help="Maximum epochs (overrides the profile).")
@click.option("--profile", type=click.Choice(["quick", "paper"]),
              help="paper: the paper's settings (default); quick: short CPU-friendly run.")
@click.option("--promote", type=click.Choice(["if-better", "always", "never"]),
              help="Make the candidate the current model (default: train.promote).")
@common
def retrain(cfg: Config, variant: str | None, start: str | None, end: str | None,
            epochs: int | None, profile: str | None, promote: str | None) -> None:
    """Train a model on the store and promote it if it beats the current one.

    Also runs under torchrun (`torchrun --nproc-per-node N -m smcast retrain ...`): one
    process per GPU (or CPU process with gloo); only rank 0 prints the summary."""
    from smcast.train.retrain import retrain as run_retrain

    summary = run_retrain(cfg, variant, parse_day(start, "--start"), parse_day(end, "--end"),
                          epochs, profile, promote)
    if summary is not None:  # None on the other ranks of a torchrun job
        click.echo(summary.line())


@main.command()
@common
def models(cfg: Config) -> None:
    """List the trained models; * marks the current one."""
    from smcast.model.registry import list_models

    entries = list_models(cfg)
    for e in entries:
        m = e.manifest
        test = [r for r in m.get("metrics", {}).get("test", [])
                if r.get("predictor") in ("candidate", "model") and r.get("lead") == m["leads"][0]]
        kge = f"KGE {test[0]['KGE']:.3f}" if test else "KGE n/a"
        click.echo(f"{'*' if e.current else ' '} {e.name:<28} {m['variant']:<5} leads "
                   f"{','.join(map(str, m['leads']))}  {kge}  {m.get('created', '')[:19]}"
                   f"{'  (bundled)' if e.bundled else ''}")
    click.echo(f"{len(entries)} model(s)")


@main.command()
@click.option("--model", "model_name", help="Model name (default: the current model).")
@click.option("--start", required=True, help="First day of the evaluation period.")
@click.option("--end", required=True, help="Last day of the evaluation period.")
@click.option("--regions", type=click.Path(exists=True, dir_okay=False),
              help="Categorical region map: text 'lat lon class' per 0.5° cell (e.g. Köppen).")
@click.option("--compare", "compare_name", help="Another model for an improvement map.")
@click.option("--output", type=click.Path(file_okay=False), help="Output folder (default: "
              "<data_dir>/evaluations/<model>_<start>_<end>).")
@common
def evaluate(cfg: Config, model_name: str | None, start: str, end: str, regions: str | None,
             compare_name: str | None, output: str | None) -> None:
    """Score a model (and persistence and climatology) over a period."""
    from smcast.evaluation_report import run_evaluation

    click.echo(run_evaluation(cfg, model_name, parse_day(start, "--start"),
                              parse_day(end, "--end"), Path(regions) if regions else None,
                              compare_name, Path(output) if output else None))


if __name__ == "__main__":  # pragma: no cover
    main()
