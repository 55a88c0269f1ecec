"""``smcast.report``: files, table values, escaping, errors and atomic writes."""

from __future__ import annotations

import math
import statistics
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from smcast import report
from smcast.errors import ConfigError, DataUnavailableError
from smcast.report import FILES, render_report

TODAY = date(2026, 10, 1)
DAYS = 30
MODELS = ("demo-phys", "<b>x</b>")
LEADS = (1, 2, 3)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(model: str, issue: date, lead: int, **values) -> dict:
    row = {"model": model, "issue_date": str(issue), "lead": lead,
           "valid_date": str(issue + timedelta(days=lead)),
           "last_forcing_day": str(issue - timedelta(days=1)), "n_cells": 480,
           "r": 0.8, "rmse": 0.03, "kge": 0.6, "consistency": 0.9, "n_consistent": 432,
           "n_inconsistent": 48, "persistence_r": 0.7, "persistence_rmse": 0.04,
           "persistence_kge": 0.5, "verified_at": "2026-10-01T06:00:00+00:00"}
    row.update(values)
    return row


def clean_rows() -> pd.DataFrame:
    """20 issue dates x 3 leads x 2 models with known values, all valid in the window.

    The model's KGE beats persistence's on 15 of 20 days (i % 4 != 0) at every lead, except:
    model 0 lead 2 has no KGE on day 0 (a losing day) → 15/19; model 0 lead 3 has no persistence
    KGE on days 1 and 2 (winning days) → 13/18.
    """
    rows = []
    for m, model in enumerate(MODELS):
        for i in range(20):
            issue = date(2026, 9, 1) + timedelta(days=i)
            for lead in LEADS:
                kge = 0.9 - 0.1 * lead - 0.013 * i - 0.05 * m
                pkge = kge - 0.05 if i % 4 else kge + 0.05
                row = _row(model, issue, lead, r=0.95 - 0.02 * lead - 0.007 * i * (i % 3) - m / 50,
                           rmse=0.02 + 0.003 * lead + 0.0004 * ((7 * i) % 11) + m / 1000,
                           kge=kge, persistence_kge=pkge,
                           persistence_r=0.9 - 0.05 * lead - 0.001 * i,
                           persistence_rmse=0.025 + 0.004 * lead + 0.0001 * i,
                           consistency=0.8 + 0.01 * ((3 * i + lead) % 10))
                if m == 0 and lead == 2 and i == 0:
                    row["kge"] = math.nan
                if m == 0 and lead == 3 and i in (1, 2):
                    row["persistence_kge"] = math.nan
                if m == 1 and i == 5:  # a day without a water-balance signal, and no R
                    row["consistency"] = math.nan
                    row["r"] = math.nan
                rows.append(row)
    return pd.DataFrame(rows)


def all_rows() -> pd.DataFrame:
    """clean_rows plus rows that must be ignored: outside the window, and a superseded score."""
    extra = [_row(MODELS[0], date(2026, 8, 1), 1, r=-5.0, kge=-5.0),
             _row(MODELS[1], date(2026, 8, 28), 2, r=-5.0, kge=-5.0),  # valid 08-30
             _row(MODELS[0], date(2026, 9, 1), 1, r=-9.0, verified_at="2026-09-02T06:00:00")]
    shuffled = pd.concat([clean_rows(), pd.DataFrame(extra)], ignore_index=True)
    return shuffled.sample(frac=1.0, random_state=3).reset_index(drop=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, report.ReportResult]:
    out = tmp_path_factory.mktemp("report") / "out"
    return out, render_report(all_rows(), out, DAYS, TODAY)


def _md_table(markdown: str, model: str) -> dict[int, list[str]]:
    """The per-lead table of one model's section: lead → cells (n, R, R pers., …)."""
    section = markdown.split(f"## Model {report._md(model)}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    return {int(cells[0]): [c.strip() for c in cells[1:]] for cells in rows}


def test_writes_every_file_and_valid_pngs(rendered):
    out, result = rendered
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temporary leftovers
    assert [p.name for p in result.files] == list(FILES)
    for name in ("skill_time.png", "skill_lead.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000
        height, width, _ = imread(out / name).shape
        assert height >= 500 and width >= 800
    line = result.line()
    assert line.startswith(f"report: {2 * 20 * 3} verified forecast-days, 2026-09-02…2026-09-23,")
    assert "3 lead(s)" in line and str(out / "report.html") in line
    assert result.models == sorted(MODELS) and result.leads == list(LEADS)


def test_markdown_medians_match_input(rendered):
    out, _ = rendered
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "![Skill against valid date](skill_time.png)" in markdown
    assert "2026-09-01 … 2026-10-01" in markdown and "Forecasts:** 40 " in markdown
    rows = clean_rows()
    columns = (("r", 1, 0.0005), ("persistence_r", 2, 0.0005), ("rmse", 3, 0.00005),
               ("persistence_rmse", 4, 0.00005), ("kge", 5, 0.0005),
               ("persistence_kge", 6, 0.0005))
    for model in MODELS:
        table = _md_table(markdown, model)
        assert sorted(table) == list(LEADS)
        for lead in LEADS:
            sub = rows[(rows["model"] == model) & (rows["lead"] == lead)]
            assert table[lead][0] == "20"
            for column, index, tol in columns:
                values = [v for v in sub[column].tolist() if not math.isnan(v)]
                assert float(table[lead][index]) == pytest.approx(statistics.median(values),
                                                                  abs=tol + 1e-12)
            rates = [v for v in sub["consistency"].tolist() if not math.isnan(v)]
            assert table[lead][8] == f"{round(100 * sum(rates) / len(rates))}%"


def test_kge_beats_persistence_share(rendered):
    out, _ = rendered
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert {k: v[7] for k, v in _md_table(markdown, MODELS[0]).items()} == {
        1: "75%", 2: "79%", 3: "72%"}  # 15/20, 15/19, 13/18
    assert {v[7] for v in _md_table(markdown, MODELS[1]).values()} == {"75%"}


def test_csv_holds_the_rows_used(rendered):
    out, _ = rendered
    got = pd.read_csv(out / "verification.csv")
    want = clean_rows().sort_values(["valid_date", "lead", "model", "issue_date"])
    assert list(got.columns) == list(want.columns)
    assert list(zip(got["valid_date"], got["lead"], strict=True)) == sorted(
        zip(want["valid_date"], want["lead"], strict=True))
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)


def test_html_is_self_contained_and_escapes_model_names(rendered):
    out, _ = rendered
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert '<img src="skill_time.png"' in page and '<img src="skill_lead.png"' in page
    assert "<style>" in page and "<script" not in page and "http" not in page
    assert page.count("<table>") == len(MODELS) and "KGE &gt; pers." in page
    assert r"\<b\>x\</b\>" in (out / "report.md").read_text(encoding="utf-8")


def test_missing_values_are_shown_as_dashes(tmp_path):
    rows = pd.DataFrame([_row("m", date(2026, 9, 10) + timedelta(days=i), 1,
                              persistence_kge=math.nan, persistence_r=math.nan,
                              consistency=math.nan) for i in range(3)])
    render_report(rows, tmp_path, DAYS, TODAY)
    cells = _md_table((tmp_path / "report.md").read_text(encoding="utf-8"), "m")[1]
    assert cells[0] == "3" and cells[1] == "0.800" and cells[2] == "–"
    assert cells[7] == "–" and cells[8] == "–"


def test_no_rows_raise_data_unavailable(tmp_path):
    out = tmp_path / "out"
    for rows in (pd.DataFrame(), clean_rows().iloc[:0], clean_rows()):
        with pytest.raises(DataUnavailableError, match=r"smcast verify.*--days"):
            render_report(rows, out, 10, date(2027, 1, 1))  # the last one: all rows too old
    assert not out.exists()


def test_missing_column_raises_value_error(tmp_path):
    rows = clean_rows().drop(columns=["persistence_kge", "n_cells"])
    with pytest.raises(ValueError, match="n_cells, persistence_kge"):
        render_report(rows, tmp_path, DAYS, TODAY)


def test_window_and_days():
    assert report.window(30, TODAY) == (date(2026, 9, 1), TODAY)
    with pytest.raises(ConfigError):
        report.window(0, TODAY)


def test_failed_writes_leave_only_complete_files(tmp_path, monkeypatch):
    out, ref = tmp_path / "out", tmp_path / "ref"
    render_report(clean_rows(), out, DAYS, TODAY)
    old = {name: (out / name).read_bytes() for name in FILES}
    newer = clean_rows().assign(kge=lambda d: d["kge"] - 0.2)
    render_report(newer, ref, DAYS, TODAY)
    new = {name: (ref / name).read_bytes() for name in FILES}

    def savefig_then_crash(self, fname, **kwargs):
        Path(fname).write_bytes(PNG_MAGIC + b"half")
        raise OSError("disk full")

    with monkeypatch.context() as m:  # crash while writing the first file
        m.setattr(Figure, "savefig", savefig_then_crash)
        with pytest.raises(OSError, match="disk full"):
            render_report(newer, out, DAYS, TODAY)
    assert {name: (out / name).read_bytes() for name in FILES} == old

    def html_crash(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "_html", html_crash)  # crash before the last file
    with pytest.raises(RuntimeError, match="boom"):
        render_report(newer, out, DAYS, TODAY)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in ("verification.csv", "report.md"):
        assert (out / name).read_bytes() == new[name] != old[name]
    assert (out / "report.html").read_bytes() == old["report.html"]
    for name in ("skill_time.png", "skill_lead.png"):
        assert np.asarray(imread(out / name)).ndim == 3
        assert (out / name).read_bytes() in (old[name], new[name])
