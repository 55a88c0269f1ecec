"""``smcast report``: render the verification table as plots, tables and a small web page.

Input rows come from the table ``smcast verify`` appends to (one row per model, issue date and
lead; see :data:`REQUIRED`). Outputs, each written atomically into ``out_dir``:

* ``skill_time.png``: KGE and RMSE against valid date, one colour per lead, persistence dashed;
  one column of panels per model;
* ``skill_lead.png``: median R, RMSE, KGE and mean consistency against lead, model (solid) vs
  persistence (dashed, same colour; consistency has no persistence line);
* ``verification.csv``: the rows used, sorted by valid date and lead;
* ``report.md`` and ``report.html``: period, models, counts, the plots and a per-lead table per
  model. ``report.html`` is written last, so it never links to a missing plot.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from smcast.errors import ConfigError, DataUnavailableError
from smcast.writers.atomic import atomic_path

REQUIRED = ("model", "issue_date", "lead", "valid_date", "last_forcing_day", "n_cells", "r",
            "rmse", "kge", "consistency", "n_consistent", "n_inconsistent", "persistence_r",
            "persistence_rmse", "persistence_kge", "verified_at")
#: metric column → (name, unit) for plots
LABELS = {"r": ("R", "1"), "rmse": ("RMSE", "m³ m⁻³"), "kge": ("KGE", "1"),
          "consistency": ("consistency rate", "fraction")}
#: per-lead table: (column, heading, format)
TABLE = (("n", "n", "{:d}"), ("r", "R", "{:.3f}"), ("persistence_r", "R pers.", "{:.3f}"),
         ("rmse", "RMSE (m³ m⁻³)", "{:.4f}"), ("persistence_rmse", "RMSE pers.", "{:.4f}"),
         ("kge", "KGE", "{:.3f}"), ("persistence_kge", "KGE pers.", "{:.3f}"),
         ("kge_beats", "KGE > pers.", "{:.0%}"), ("consistency", "consistency", "{:.0%}"))
FILES = ("skill_time.png", "skill_lead.png", "verification.csv", "report.md", "report.html")
CSS = ("body{font-family:sans-serif;max-width:72em;margin:1em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #bbb;"
       "padding:.2em .6em;text-align:right}th{background:#eee}img{max-width:100%}"
       "p.note{color:#555;font-size:90%}")


@dataclass
class ReportResult:
    """What :func:`render_report` wrote and a summary of the rows it used."""

    files: list[Path]
    out_dir: Path
    n_rows: int
    first: date
    last: date
    leads: list[int]
    models: list[str]

    def line(self) -> str:
        """One summary line for the CLI."""
        what = "model" if len(self.models) == 1 else "models"
        return (f"report: {self.n_rows} verified forecast-days, {self.first}…{self.last}, "
                f"{len(self.leads)} lead(s), {what} {', '.join(self.models)} → "
                f"{self.out_dir / 'report.html'}")


def window(days: int, today: date) -> tuple[date, date]:
    """The valid days a report covers: ``today − days`` … ``today``, both inclusive."""
    if days < 1:
        raise ConfigError(f"--days must be at least 1, got {days}")
    return today - timedelta(days=days), today


def render_report(rows: pd.DataFrame, out_dir: Path, days: int, today: date) -> ReportResult:
    """Write the report of the verification rows whose valid day lies in :func:`window`.

    Rows repeated for the same (model, issue_date, lead) keep the last ``verified_at``. Raises
    ``ValueError`` naming missing columns and ``DataUnavailableError`` when no row is left.
    """
    start, end = window(days, today)
    missing = [c for c in REQUIRED if c not in rows.columns]
    if len(rows) and missing:
        raise ValueError(f"verification rows lack column(s) {', '.join(missing)}")
    df = select(rows, start, end) if len(rows) else rows
    if df.empty:
        raise DataUnavailableError(
            f"no verified forecasts with valid days in the last {days} days ({start}…{end}); "
            "run `smcast verify` after forecasts' valid days reach the store, or widen --days")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = sorted(df["model"].unique())
    sections = {m: _section(df[df["model"] == m]) for m in models}
    paths = [out_dir / name for name in FILES]
    _save(_time_figure(df, models, start, end), paths[0])
    _save(_lead_figure({m: table for m, (_, table) in sections.items()}), paths[1])
    with atomic_path(paths[2]) as tmp:
        df.drop(columns="_valid").to_csv(tmp, index=False)
    facts = _facts(df, start, end, models)
    with atomic_path(paths[3]) as tmp:
        tmp.write_text(_markdown(facts, sections), encoding="utf-8")
    with atomic_path(paths[4]) as tmp:
        tmp.write_text(_html(facts, sections), encoding="utf-8")
    valid = df["_valid"].dt.date
    return ReportResult(paths, out_dir, len(df), valid.min(), valid.max(),
                        sorted(int(k) for k in df["lead"].unique()), models)


def select(rows: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Typed, de-duplicated rows with ``start <= valid_date <= end``, sorted by valid date, lead.

    Adds ``_valid`` (the valid date as a timestamp); metric columns become floats (NaN kept).
    """
    df = rows.copy()
    df["lead"] = pd.to_numeric(df["lead"]).astype(int)
    for col in ("r", "rmse", "kge", "consistency", "persistence_r", "persistence_rmse",
                "persistence_kge"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["model"] = df["model"].astype(str)
    df["_valid"] = pd.to_datetime(df["valid_date"], format="%Y-%m-%d")
    df = df[(df["_valid"] >= pd.Timestamp(start)) & (df["_valid"] <= pd.Timestamp(end))]
    df = df.sort_values("verified_at", kind="stable")
    df = df.drop_duplicates(["model", "issue_date", "lead"], keep="last")
    return df.sort_values(["valid_date", "lead", "model", "issue_date"]).reset_index(drop=True)


def lead_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per lead (days): n, medians of R, RMSE (m3 m-3), KGE for model and persistence, the share
    of days with both KGEs finite on which the model's is higher, and the mean consistency rate.
    """
    def beats(g: pd.DataFrame) -> float:
        ok = g["kge"].notna() & g["persistence_kge"].notna()
        return float((g["kge"][ok] > g["persistence_kge"][ok]).mean()) if ok.any() else np.nan

    groups = df.groupby("lead", sort=True)
    metrics = ["r", "persistence_r", "rmse", "persistence_rmse", "kge", "persistence_kge"]
    table = groups[metrics].median()
    table.insert(0, "n", groups.size())
    table["kge_beats"] = pd.Series({k: beats(g) for k, g in groups})
    table["consistency"] = groups["consistency"].mean()
    return table


def _section(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """One model's rows → (a sentence on what was verified, its :func:`lead_table`)."""
    issues = df["issue_date"].astype(str)
    note = (f"{issues.nunique()} forecasts issued {issues.min()} … {issues.max()}, "
            f"{len(df)} verified forecast-days.")
    return note, lead_table(df)


def _facts(df: pd.DataFrame, start: date, end: date, models: list[str]) -> dict[str, str]:
    """Plain-text statements for the page header."""
    valid = df["_valid"].dt.date
    forecasts = df.groupby("model")["issue_date"].nunique().sum()
    return {"Window": f"valid days {start} … {end}",
            "Verified valid days": f"{valid.min()} … {valid.max()}",
            "Models": ", ".join(models),
            "Forecasts": f"{forecasts} ({len(df)} verified forecast-days, leads "
                         f"{', '.join(str(k) for k in sorted(df['lead'].unique()))} d)"}


def _cells(table: pd.DataFrame) -> list[list[str]]:
    """Formatted table rows, lead first; '–' for values that are missing."""
    return [[str(lead)] + [("–" if pd.isna(row[c]) else fmt.format(
        int(row[c]) if c == "n" else row[c])) for c, _, fmt in TABLE]
        for lead, row in table.iterrows()]


NOTE = ("Medians over valid days of the land-wide scores against ERA5-Land; 'pers.' is "
        "persistence (ERA5-Land on the last forcing day held constant) on the same cells and "
        "days; 'KGE > pers.' is the share of days, among those with both KGEs, on which the "
        "model's KGE is higher; consistency is the mean daily share of physically consistent "
        "predictions (Eq. 19).")


def _markdown(facts: dict[str, str], sections: dict[str, tuple[str, pd.DataFrame]]) -> str:
    """The report as Markdown."""
    lines = ["# Soil-moisture forecast verification", ""]
    lines += [f"- **{k}:** {_md(v)}" for k, v in facts.items()]
    lines += ["", "![Skill against valid date](skill_time.png)", "",
              "![Skill against lead](skill_lead.png)", ""]
    head = "| lead (d) | " + " | ".join(h for _, h, _ in TABLE) + " |"
    for model, (note, table) in sections.items():
        lines += [f"## Model {_md(model)}", "", note, "", head, "|" + "---:|" * (len(TABLE) + 1)]
        lines += ["| " + " | ".join(cells) + " |" for cells in _cells(table)]
        lines.append("")
    return "\n".join(lines + [NOTE, ""])


def _html(facts: dict[str, str], sections: dict[str, tuple[str, pd.DataFrame]]) -> str:
    """The report as a self-contained HTML page (inline CSS, no scripts); text escaped."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>Soil-moisture forecast verification</title>", f"<style>{CSS}</style>",
             "</head><body>", "<h1>Soil-moisture forecast verification</h1>", "<ul>"]
    parts += [f"<li><b>{e(k)}:</b> {e(v)}</li>" for k, v in facts.items()]
    parts += ["</ul>", '<p><img src="skill_time.png" alt="Skill against valid date"></p>',
              '<p><img src="skill_lead.png" alt="Skill against lead"></p>']
    head = "".join(f"<th>{e(h)}</th>" for _, h, _ in TABLE)
    for model, (note, table) in sections.items():
        parts += [f"<h2>Model {e(model)}</h2>", f"<p>{e(note)}</p>",
                  f"<table><tr><th>lead (d)</th>{head}</tr>"]
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>"
                  for cells in _cells(table)]
        parts.append("</table>")
    return "\n".join(parts + [f'<p class="note">{e(NOTE)}</p>', "</body></html>", ""])


def _md(text: str) -> str:
    """Backslash-escape Markdown's active characters, so data text shows literally."""
    return "".join("\\" + ch if ch in "\\`*[]<>|#" else ch for ch in text)


def _tex(text: str) -> str:
    """Escape ``$`` so matplotlib does not read data text as mathtext."""
    return text.replace("$", r"\$")


def _figure(nrows: int, ncols: int, width: float, height: float, sharey: str | bool):
    """A constrained-layout Agg figure and its axes grid (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharex="col", sharey=sharey)


def _colours(n: int) -> list:
    """n distinguishable colours (tab10, or viridis beyond ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if n <= 10 else colormaps["viridis"].resampled(n)
    return [cmap(i) for i in range(n)]


def _time_figure(df: pd.DataFrame, models: list[str], start: date, end: date):
    """KGE (1) and RMSE (m3 m-3) against valid date; rows metrics, columns models."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.lines import Line2D

    leads = sorted(df["lead"].unique())
    colour = dict(zip(leads, _colours(len(leads)), strict=True))
    fig, axes = _figure(2, len(models), 3.0 + 5.0 * len(models), 6.5, "row")
    for j, model in enumerate(models):
        sub = df[df["model"] == model]
        for i, metric in enumerate(("kge", "rmse")):
            ax = axes[i, j]
            for lead, g in sub.groupby("lead"):
                x = g["_valid"].to_numpy()
                ax.plot(x, g[metric], "-o", ms=2.5, lw=1.2, color=colour[lead])
                ax.plot(x, g[f"persistence_{metric}"], "--", lw=1.0, color=colour[lead])
            ax.set_ylabel("{} ({})".format(*LABELS[metric]))
            ax.grid(alpha=0.4)
        axes[0, j].set_title(f"model {_tex(model)}")
        axes[1, j].set_xlabel("valid date")
        locator = AutoDateLocator()
        axes[1, j].xaxis.set_major_locator(locator)
        axes[1, j].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    handles = [Line2D([], [], color=colour[k], marker="o", ms=3, label=f"lead {k} d")
               for k in leads]
    handles += [Line2D([], [], color="k", label="model"),
                Line2D([], [], color="k", ls="--", label="persistence")]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    fig.suptitle(f"Forecast skill against ERA5-Land by valid date, {start} … {end}")
    return fig


def _lead_figure(tables: dict[str, pd.DataFrame]):
    """Median R, RMSE (m3 m-3), KGE and mean consistency against lead (days), per model."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(2, 2, 12.0, 7.0, False)
    colours = _colours(len(tables))
    for ax, metric in zip(axes.flat, ("r", "rmse", "kge", "consistency"), strict=True):
        for (model, table), c in zip(tables.items(), colours, strict=True):
            ax.plot(table.index, table[metric], "-o", color=c, label=f"model {_tex(model)}")
            if metric != "consistency":
                ax.plot(table.index, table[f"persistence_{metric}"], "--s", ms=4, color=c,
                        label=f"persistence ({_tex(model)}'s days)")
        stat, (name, unit) = ("mean" if metric == "consistency" else "median"), LABELS[metric]
        ax.set_ylabel(f"{stat} {name} ({unit})")
        ax.set_title(f"{stat.capitalize()} {name}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.4)
    for ax in axes[1]:
        ax.set_xlabel("lead (days)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right upper",
               fontsize="small")
    fig.suptitle("Forecast skill against lead: model (solid) vs persistence (dashed)")
    return fig


def _save(fig, path: Path) -> None:
    """Write a figure as PNG atomically and release it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        fig.clear()
