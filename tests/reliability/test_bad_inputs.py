"""Every bad input, one row each: a message naming the problem and the fix, the exit code of its
class (``smcast.errors``: 2 config/usage, 3 bad input data, 4 not available, 5 store, 6 model;
1 for an environment failure such as a full disk), no traceback, and the store and the output
directory as they were (every file hashed; no new file).

``CASES`` is the table; ``len(CASES)`` is the number of distinct bad inputs covered. Each case's
``setup`` prepares a fresh data directory under ``tmp_path`` (copies of module-wide bases: a
directory-source store over an hourly mirror, and a demo store with a tiny current model and one
forecast) and returns the ``smcast`` command line.

Two inputs that look bad are accepted, with identical results, because smcast normalises them
(``smcast.grid.normalise_coords``): longitudes in 0…360 instead of −180…180, and time steps out of
order. They have their own tests at the end.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from smcast.cli import main
from smcast.clock import utc_today
from smcast.outputs import LOCK_NAME
from tests.conftest import AREA, hourly_mirror
from tests.helpers import FORECAST_SETS, snapshot

D0 = date(2024, 1, 30)  # the mirror holds D0…D3 (and the 00 UTC step of D4)
D1, D2, D3 = (D0 + timedelta(days=k) for k in (1, 2, 3))  # the base store holds D1 only
ISSUE = date(2021, 3, 25)  # demo store 2021-01-01…03-20 → L = 03-20: no ingest before the model
DONE_ISSUE = date(2021, 3, 20)  # the forecast already in the base output directory


# -- module-wide bases, built on first use and copied into each case ---------------------------
class Bases:
    """Expensive starting states, built once per module and copied per case."""

    def __init__(self, factory: pytest.TempPathFactory, demo_cache: Path) -> None:
        self.factory = factory
        self.demo_cache = demo_cache

    @cached_property
    def mirror(self) -> Path:
        """``<root>/mirror`` (hourly files D0…D4 00 UTC) and ``<root>/data/store.zarr`` (D1)."""
        from smcast.config import load_config
        from smcast.ingest.pipeline import ingest

        root = self.factory.mktemp("mirror-base")
        hourly_mirror(root / "mirror", D0, 4)
        ingest(load_config(None, mirror_sets(root), environ={}), D1, D1)
        return root

    @cached_property
    def forecast(self) -> Path:
        """``<root>/data``: demo store 2021-01-01…03-20, the tiny model ``tiny`` made current,
        and the forecast of 2021-03-20 (valid 03-16…03-18, verifiable from the store)."""
        from smcast.forecast import run_forecast
        from tests.helpers import tiny_forecast_setup

        root = self.factory.mktemp("forecast-base")
        cfg, _ = tiny_forecast_setup(root / "data", self.demo_cache)
        assert run_forecast(cfg, DONE_ISSUE).status == "done"
        return root


@pytest.fixture(scope="module")
def bases(tmp_path_factory, demo_cache) -> Bases:
    return Bases(tmp_path_factory, demo_cache)


@dataclass
class Ctx:
    """One case's world: ``tmp/data`` is the run's data_dir (store, models, forecasts)."""

    tmp: Path
    bases: Bases
    monkeypatch: pytest.MonkeyPatch
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def store(self) -> Path:
        return self.data / "store.zarr"

    @property
    def out(self) -> Path:
        return self.data / "forecasts"

    @property
    def mirror(self) -> Path:
        return self.tmp / "mirror"

    def day_file(self, day: date) -> Path:
        return self.mirror / f"era5land_{day:%Y%m%d}.nc"

    def a_file(self) -> Path:
        """A regular file, so that folders 'under' it cannot be created (even by root)."""
        path = self.tmp / "a-file"
        path.write_text("not a folder\n")
        return path


def mirror_sets(root: Path) -> list[str]:
    return [f"data_dir={root / 'data'}", f"grid.area={AREA}", "source.name=directory",
            f"source.directory.path={root / 'mirror'}", "ingest.workers=1"]


def with_mirror(ctx: Ctx) -> list[str]:
    """A copy of the mirror base; returns its --set overrides."""
    shutil.copytree(ctx.bases.mirror / "mirror", ctx.mirror)
    shutil.copytree(ctx.bases.mirror / "data", ctx.data)
    return mirror_sets(ctx.tmp)


def with_forecast(ctx: Ctx) -> list[str]:
    """A copy of the forecast base; returns its --set overrides."""
    shutil.copytree(ctx.bases.forecast / "data", ctx.data)
    return [f"data_dir={ctx.data}", f"source.demo.cache_dir={ctx.bases.demo_cache}",
            *FORECAST_SETS]


def sets(*items: str) -> list[str]:
    return [x for s in items for x in ("--set", s)]


def ingest_args(start: date | str, end: date | str, overrides: list[str], *extra: str
                ) -> list[str]:
    return ["ingest", "--start", str(start), "--end", str(end), *extra, *sets(*overrides)]


def forecast_args(overrides: list[str], *extra: str, issue: str = str(ISSUE)) -> list[str]:
    return ["forecast", "--date", issue, *extra, *sets(*overrides)]


def rewrite(path: Path, change: Callable[[xr.Dataset], xr.Dataset]) -> None:
    ds = xr.load_dataset(path)
    path.unlink()
    change(ds).to_netcdf(path)


def damaged_mirror(change: Callable[[xr.Dataset], xr.Dataset]) -> Callable[[Ctx], list[str]]:
    """Setup: the mirror with D2's file rewritten by ``change``; ingest D2…D3 (D2 is the first
    new day, so nothing before it may be kept)."""
    def setup(ctx: Ctx) -> list[str]:
        overrides = with_mirror(ctx)
        rewrite(ctx.day_file(D2), change)
        return ingest_args(D2, D3, overrides)
    return setup


# -- config ---------------------------------------------------------------------------------
def _yaml_config(text: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        overrides = with_mirror(ctx)
        (ctx.tmp / "smcast.yaml").write_text(text)
        return [*ingest_args(D2, D3, overrides), "--config", str(ctx.tmp / "smcast.yaml")]
    return setup


def _mirror_with(*extra: str, start: date = D2, end: date = D3) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return ingest_args(start, end, [*with_mirror(ctx), *extra])
    return setup


def _missing_config_file(ctx: Ctx) -> list[str]:
    return [*ingest_args(D2, D3, with_mirror(ctx)), "--config", str(ctx.tmp / "nope.yaml")]


def _directory_source_without_path(ctx: Ctx) -> list[str]:
    overrides = [s for s in with_mirror(ctx) if not s.startswith("source.directory.path")]
    return ingest_args(D2, D3, overrides)


def _data_dir_under_a_file(ctx: Ctx) -> list[str]:
    """data_dir whose parent is a regular file: its folders cannot be created."""
    with_mirror(ctx)
    return ingest_args(D2, D3, [*mirror_sets(ctx.tmp), f"data_dir={ctx.a_file() / 'data'}"])


def _data_dir_read_only(ctx: Ctx) -> list[str]:
    """data_dir in a folder nobody may write to: mode 0555, or for root (whom modes do not
    stop) the immutable attribute (``chattr +i``); skipped where neither is possible."""
    overrides = with_mirror(ctx)
    locked = ctx.tmp / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
        ctx.cleanups.append(lambda: locked.chmod(0o755))
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(locked)], check=False,
                                                   capture_output=True).returncode == 0:
        ctx.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(locked)], check=True))
    else:
        pytest.skip("running as root without chattr +i: a read-only folder stays writable")
    return ingest_args(D2, D3, [*overrides, f"data_dir={locked / 'data'}"])


def _output_under_a_file(ctx: Ctx) -> list[str]:
    return forecast_args(with_forecast(ctx), "--output", str(ctx.a_file() / "out"))


# -- data -----------------------------------------------------------------------------------
def _drop_day(ctx: Ctx) -> list[str]:
    overrides = with_mirror(ctx)
    ctx.day_file(D2).unlink()
    return ingest_args(D2, D3, overrides)


def _cut_short(ctx: Ctx) -> list[str]:
    overrides = with_mirror(ctx)
    path = ctx.day_file(D2)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return ingest_args(D2, D3, overrides)


def _html_as_nc(ctx: Ctx) -> list[str]:
    overrides = with_mirror(ctx)
    ctx.day_file(D2).write_text("<html>Service unavailable</html>\n")
    return ingest_args(D2, D3, overrides)


def _duplicate_file(ctx: Ctx) -> list[str]:
    overrides = with_mirror(ctx)
    shutil.copyfile(ctx.day_file(D2), ctx.mirror / "era5land_copy.nc")
    return ingest_args(D2, D3, overrides)


def _nan_over_land(ds: xr.Dataset) -> xr.Dataset:
    ds["t2m"] = ds["t2m"].where(ds["latitude"] < 41.0)  # the northern half of the area
    return ds


def _swvl1_in_percent(ds: xr.Dataset) -> xr.Dataset:
    ds["swvl1"] = ds["swvl1"] * 100.0  # % instead of m3 m-3, units still say m**3 m**-3
    return ds


def _celsius_labelled_kelvin(ds: xr.Dataset) -> xr.Dataset:
    ds["t2m"] = ds["t2m"] - 273.15  # the units attribute still says K
    return ds


def _wrong_units_attribute(ds: xr.Dataset) -> xr.Dataset:
    ds["sp"].attrs["units"] = "hPa"
    return ds


def _repeated_step(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(valid_time=[*range(24), 23])


# -- model ----------------------------------------------------------------------------------
class Payload:
    """A malicious pickle: unpickling it creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _marker(ctx: Ctx) -> Path:
    return ctx.tmp / "pwned"


def _flip_weights_byte(ctx: Ctx) -> list[str]:
    overrides = with_forecast(ctx)
    weights = ctx.data / "models" / "tiny" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    return forecast_args(overrides)


def _pickle_in_package(ctx: Ctx) -> list[str]:
    overrides = with_forecast(ctx)
    (ctx.data / "models" / "tiny" / "model.pt").write_bytes(pickle.dumps(Payload(_marker(ctx))))
    return forecast_args(overrides)


def _pickle_as_weights(ctx: Ctx) -> list[str]:
    """A pickle in place of the safetensors file, the manifest's checksum made to match."""
    overrides = with_forecast(ctx)
    package = ctx.data / "models" / "tiny"
    weights = package / "weights.safetensors"
    weights.write_bytes(pickle.dumps(Payload(_marker(ctx))))
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (package / "manifest.json").write_text(json.dumps(manifest))
    return forecast_args(overrides)


def _no_marker(ctx: Ctx) -> None:
    assert not _marker(ctx).exists(), "the pickle was executed"


def _model_on_another_grid(ctx: Ctx) -> list[str]:
    from smcast.model import save_package
    from tests.unit.test_model import tiny_model  # a 2 x 2 grid at 40…41°N, 10…11°E

    overrides = with_forecast(ctx)
    save_package(tiny_model(leads=(1, 2, 3)), ctx.data / "models" / "othergrid")
    return forecast_args(overrides, "--model", "othergrid")


def _model_with_other_inputs(ctx: Ctx) -> list[str]:
    """The tiny model as it is, but its last static input is a field the store lacks."""
    from smcast.model import SoilMoistureModel, load_package, save_package

    overrides = with_forecast(ctx)
    m = load_package(ctx.data / "models" / "tiny")
    other = SoilMoistureModel(m.variant, m.scalers, m.land_mask, m.grid, m.dynamic_inputs,
                              (*m.static_inputs[:-1], "soil_ph"), m.seq_len, m.leads,
                              m.hidden_size, m.num_layers, m.dropout, m.network)
    save_package(other, ctx.data / "models" / "otherinputs")
    return forecast_args(overrides, "--model", "otherinputs")


# -- output templates -----------------------------------------------------------------------
def _templates(**changes: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        import yaml

        from smcast.templates import templates_dir

        overrides = with_forecast(ctx)
        names = yaml.safe_load((templates_dir() / "filenames.yaml").read_text())
        names.update({k: v.replace("TMP", str(ctx.tmp)) for k, v in changes.items()})
        (ctx.tmp / "names.yaml").write_text(yaml.safe_dump(names))
        return forecast_args([*overrides, f"forecast.filenames={ctx.tmp / 'names.yaml'}"])
    return setup


def _nothing_escaped(ctx: Ctx) -> None:
    assert not list(ctx.data.glob("*.nc")) and not list(ctx.tmp.glob("escaped*"))


# -- dates ----------------------------------------------------------------------------------
def _forecast_with_date(issue: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return forecast_args(with_forecast(ctx), issue=issue)
    return setup


def _demo_ingest(start: date | str, end: date | str, *extra: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return ingest_args(start, end, [*with_forecast(ctx), *extra])
    return setup


def _ingest_beyond_latency(ctx: Ctx) -> list[str]:
    today = utc_today()
    return ingest_args(today - timedelta(days=2), today, with_forecast(ctx))


# -- disk full ------------------------------------------------------------------------------
def _disk_full_during_ingest(ctx: Ctx) -> list[str]:
    """ENOSPC at zarr's lowest-level write while D3's swvl1 chunk is written; D2 (an earlier
    batch of the same run) is already complete by then."""
    import zarr.storage._local as local

    overrides = with_mirror(ctx)
    real = local._put

    def put(path: Path, value, exclusive: bool = False) -> int:
        if Path(path).relative_to(ctx.store).as_posix() == "swvl1/2.0.0":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, value, exclusive=exclusive)

    ctx.monkeypatch.setattr(local, "_put", put)
    return ingest_args(D2, D3, [*overrides, "ingest.batch_days=1"])


def _repaired_and_resumable(ctx: Ctx) -> None:
    """Days complete before stay complete and whole; no partial day is flagged complete; the
    next ingest (disk space freed) completes and gives the same store as a clean run."""
    from smcast.store import DailyStore

    ctx.monkeypatch.undo()
    clean = ctx.tmp / "clean"  # the same ingest without a full disk
    shutil.copytree(ctx.bases.mirror / "data", clean)
    ok = invoke(ingest_args(D2, D3, [*mirror_sets(ctx.tmp), f"data_dir={clean}"]))
    assert ok.exit_code == 0, ok.output
    want = xr.open_zarr(clean / "store.zarr").load()
    store = DailyStore(ctx.store)
    complete = store.complete_days()
    assert complete == [D1, D2], complete  # D2's batch finished before the disk filled
    interim = store.open().load()  # what a reader sees now: the complete days, whole
    assert [str(t)[:10] for t in interim["time"].values] == [str(D1), str(D2)]
    for day in complete:
        xr.testing.assert_identical(interim.sel(time=str(day)), want.sel(time=str(day)))
    again = invoke(ingest_args(D2, D3, mirror_sets(ctx.tmp)))  # disk space freed
    assert again.exit_code == 0, again.output
    assert DailyStore(ctx.store).complete_days() == [D1, D2, D3]
    xr.testing.assert_identical(xr.open_zarr(ctx.store).load(), want)


def _disk_full_during_verify(ctx: Ctx) -> list[str]:
    """ENOSPC half-way through the copy that verify rewrites the forecast NetCDF into."""
    overrides = with_forecast(ctx)
    real = shutil.copyfile

    def copyfile(src, dst, **kw):
        if Path(src).suffix != ".nc":
            return real(src, dst, **kw)
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            fo.write(fi.read()[: os.path.getsize(src) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    ctx.monkeypatch.setattr(shutil, "copyfile", copyfile)
    return ["verify", *sets(*overrides)]


def _forecast_files_and_manifest_intact(ctx: Ctx) -> None:
    folder = ctx.out / f"{DONE_ISSUE:%Y%m%d}"
    manifest = json.loads(next(folder.glob("*.json")).read_text())
    assert manifest["verified"] == {}
    for item in manifest["files"]:
        assert hashlib.sha256((folder / item["path"]).read_bytes()).hexdigest() == item["sha256"]


# -- the table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, and what smcast must answer.

    ``fragments``: words that must appear in stderr — at least one naming the problem and one
    naming the fix. ``store_unchanged``: False only where a run may legitimately have changed
    the store before the failure (``after`` then checks the store is consistent instead).
    """

    name: str
    setup: Callable[[Ctx], list[str]]
    code: int
    fragments: tuple[str, ...]
    after: Callable[[Ctx], None] | None = None
    store_unchanged: bool = True


CASES: list[Case] = [
    # config and command line (2)
    Case("config-unknown-key", _yaml_config("grid:\n  resolutoin: 1\n"), 2,
         ("unknown key 'grid.resolutoin'", "valid names here: resolution")),
    Case("config-wrong-type", _mirror_with("ingest.workers=many"), 2,
         ("ingest.workers", "should be a valid integer")),
    Case("config-directory-source-without-path", _directory_source_without_path, 2,
         ("the directory source needs a folder", "set source.directory.path or pass --input")),
    Case("config-set-without-equals", _mirror_with("grid.resolution"), 2,
         ("--set 'grid.resolution'", "expected key.path=value")),
    Case("config-file-missing", _missing_config_file, 2,
         ("nope.yaml does not exist", "pass an existing file with --config")),
    Case("config-input-directory-missing", _mirror_with("source.directory.path=/nonexistent/era5"),
         2, ("/nonexistent/era5 does not exist", "set source.directory.path or --input")),
    Case("config-data-dir-under-a-file", _data_dir_under_a_file, 2,
         ("a-file/data", "set data_dir")),
    Case("config-data-dir-read-only", _data_dir_read_only, 2,
         ("locked/data", "set data_dir or store.path to a folder smcast can write")),
    Case("config-output-dir-under-a-file", _output_under_a_file, 2,
         ("a-file/out", "--output")),
    Case("config-invalid-yaml", _yaml_config("grid:\n  area: [48, 4, 44\n"), 2,
         ("is not valid YAML", "line 2, column 9", "fix the syntax")),
    Case("config-bad-cron", _yaml_config("schedule:\n  cron: '61 25 * * *'\n"), 2,
         ("schedule.cron", "not a crontab expression", "e.g. '30 6 * * *'")),
    # data (3; 5 for the store)
    Case("data-missing-variable", damaged_mirror(lambda ds: ds.drop_vars("swvl2")), 3,
         (f"{D2}: ", "swvl2: missing 24 hours", "fill these gaps in the mirror")),
    Case("data-missing-hour", damaged_mirror(lambda ds: ds.drop_isel(valid_time=12)), 3,
         (f"{D2}: ", "missing 12:00 UTC", "fill these gaps in the mirror")),
    Case("data-missing-day", _drop_day, 3,
         (f"{D2}: ", "missing 24 hours", "fill these gaps in the mirror")),
    Case("data-truncated-file", _cut_short, 3,
         (f"era5land_{D2:%Y%m%d}.nc", "corrupt or truncated", "download it again")),
    Case("data-not-netcdf", _html_as_nc, 3,
         (f"era5land_{D2:%Y%m%d}.nc is neither NetCDF nor GRIB",
          "remove it from the input directory")),
    Case("data-nan-over-land", damaged_mirror(_nan_over_land), 3,
         (f"t2m on {D2}", "have no data", "download them again")),
    Case("data-out-of-physical-range", damaged_mirror(_swvl1_in_percent), 3,
         (f"swvl1 on {D2}", "outside the physical range", "check the file's units")),
    Case("data-celsius-labelled-kelvin", damaged_mirror(_celsius_labelled_kelvin), 3,
         (f"t2m on {D2}", "outside the physical range", "check the file's units")),
    Case("data-wrong-units-attribute", damaged_mirror(_wrong_units_attribute), 3,
         ("sp has units 'hPa'", "Convert the file")),
    Case("data-grid-differs-from-store", _mirror_with("grid.resolution=1"), 5,
         ("has a 0.5° grid", "asks for a 1° grid", "use the store's grid settings")),
    Case("data-duplicate-times-in-a-file", damaged_mirror(_repeated_step), 3,
         ("duplicate time stamps", "re-download it")),
    Case("data-duplicate-times-across-files", _duplicate_file, 3,
         ("is in both", "keep one copy")),
    # model (6)
    Case("model-checksum-mismatch", _flip_weights_byte, 6,
         ("weights checksum mismatch", "restore it or retrain")),
    Case("model-grid-differs-from-store", _model_on_another_grid, 6,
         ("grid mismatch", "use the matching store or retrain")),
    Case("model-inputs-differ-from-store", _model_with_other_inputs, 6,
         ("missing input variable(s) soil_ph", "retrain on this store")),
    Case("model-package-holds-a-pickle", _pickle_in_package, 6,
         ("pickle-based file(s) model.pt", "Use a package written by smcast"), after=_no_marker),
    Case("model-pickle-posing-as-weights", _pickle_as_weights, 6,
         ("not a safetensors file", "Restore the package or retrain"), after=_no_marker),
    # dates
    Case("date-unparseable", _forecast_with_date("25/03/2021"), 2,
         ("'25/03/2021' is not a date", "use YYYY-MM-DD")),
    Case("date-impossible", _demo_ingest("2021-02-01", "2021-02-30"), 2,
         ("'2021-02-30' is not a date", "use YYYY-MM-DD")),
    Case("date-forecast-far-future", _forecast_with_date("2999-01-01"), 2,
         ("2999-01-01 is in the future", "use today or earlier")),
    Case("date-ingest-beyond-latency", _ingest_beyond_latency, 4,
         ("is not available yet", "End the range at")),
    Case("date-ingest-before-demo-epoch", _demo_ingest("2020-12-30", "2021-01-02"), 4,
         ("the demo world starts at 2021-01-01", "Start at or after it")),
    Case("date-forecast-before-store-start", _forecast_with_date("2020-06-01"), 4,
         ("has no complete day up to 2020-05-27", "forecast a later issue date")),
    Case("date-ingest-before-store-start", _mirror_with(start=D0, end=D0), 5,
         (f"starts at {D1}; it cannot take {D0}", "Ingest into a new store")),
    # output templates
    Case("template-parent-directory", _templates(netcdf="../../escaped-{issue}.nc"), 2,
         ("writes outside", "forecast.filenames"), after=_nothing_escaped),
    Case("template-absolute-path", _templates(manifest="TMP/escaped-{issue}.json"), 2,
         ("writes outside", "forecast.filenames"), after=_nothing_escaped),
    # disk full (1: an environment failure)
    Case("disk-full-during-ingest", _disk_full_during_ingest, 1,
         ("No space left on device", "free space on that disk"), after=_repaired_and_resumable,
         store_unchanged=False),
    Case("disk-full-during-verify", _disk_full_during_verify, 1,
         ("No space left on device", "free space on that disk"), after=_forecast_files_and_manifest_intact),
]


def invoke(args: list[str]):
    return CliRunner().invoke(main, args, env={"SMCAST_CONFIG": ""}, catch_exceptions=False)


def files(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but the run lock (it holds the last run's pid)."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def test_table_is_well_formed():
    assert len({c.name for c in CASES}) == len(CASES)
    assert all(len(c.fragments) >= 2 for c in CASES)  # the problem and the fix
    assert {2, 3, 4, 5, 6} <= {c.code for c in CASES}


def test_pickle_payload_is_live(tmp_path):
    """Control for the pickle cases: unpickled, the payload does create its marker file."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "control")))
    assert (tmp_path / "control").exists()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path, bases, monkeypatch):
    ctx = Ctx(tmp_path, bases, monkeypatch)
    try:
        args = case.setup(ctx)
        store_before = snapshot(ctx.store) if ctx.store.exists() else None
        out_before = files(ctx.out)
        result = invoke(args)
    finally:
        for cleanup in ctx.cleanups:  # e.g. make a read-only folder removable again
            cleanup()
    assert result.exit_code == case.code, result.output
    for words in case.fragments:
        assert words in result.stderr, f"{words!r} not in:\n{result.stderr}"
    assert "Traceback" not in result.output
    if case.store_unchanged:
        assert (snapshot(ctx.store) if ctx.store.exists() else None) == store_before
    assert files(ctx.out) == out_before
    if case.after:
        case.after(ctx)


# -- accepted: inputs that look bad but are normalised ---------------------------------------
def _ingest_into(mirror: Path, data: Path, area: list[float], day: date) -> xr.Dataset:
    args = ["ingest", "--start", str(day), "--end", str(day), "--input", str(mirror),
            *sets(f"data_dir={data}", f"grid.area={area}", "ingest.workers=1")]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return xr.open_zarr(data / "store.zarr").load()


def test_longitudes_0_360_give_the_same_store_as_180(tmp_path):
    """Not a bad input: longitudes in 0…360 (the CDS's own convention) and the same data in
    −180…180 are both accepted, because smcast normalises longitudes
    (``smcast.grid.normalise_coords``); across the prime meridian, where the two orders differ,
    the stores are identical."""
    from smcast.testing.era5 import era5_grid, synthetic_hourly, write_cds_netcdf

    lat, lon = era5_grid(49.8, 52.2, -2.2, 2.2)  # 0…2.2, then 357.8…359.9
    assert lon.max() > 180
    hourly, _ = synthetic_hourly(lat, lon, D0, 1, seed=3)
    write_cds_netcdf(hourly, tmp_path / "m360" / "a.nc")
    east = hourly.assign_coords(longitude=((hourly.longitude + 180) % 360) - 180)
    write_cds_netcdf(east.sortby("longitude"), tmp_path / "m180" / "a.nc")
    area = [52.0, -2.0, 50.0, 2.0]
    a = _ingest_into(tmp_path / "m360", tmp_path / "a", area, D0)
    b = _ingest_into(tmp_path / "m180", tmp_path / "b", area, D0)
    assert a["lon"].values.tolist() == [-1.75, -1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 1.75]
    assert int(a["complete"].sum()) == 1
    xr.testing.assert_identical(a, b)


def test_time_steps_out_of_order_give_the_same_store(tmp_path):
    """Not a bad input: hourly steps stored out of order in a file are accepted, because smcast
    sorts time when it opens a file (``smcast.grid.normalise_coords``); the store equals the one
    from the same files in order."""
    hourly_mirror(tmp_path / "ordered", D0, 1)
    rng = np.random.default_rng(7)
    for path in sorted((tmp_path / "ordered").glob("*.nc")):
        ds = xr.load_dataset(path)
        shuffled = ds.isel(valid_time=rng.permutation(ds.sizes["valid_time"]))
        if ds.sizes["valid_time"] > 1:
            assert not (np.diff(shuffled["valid_time"].values) > np.timedelta64(0)).all()
        (tmp_path / "shuffled").mkdir(exist_ok=True)
        shuffled.to_netcdf(tmp_path / "shuffled" / path.name)
    a = _ingest_into(tmp_path / "ordered", tmp_path / "a", AREA, D0)
    b = _ingest_into(tmp_path / "shuffled", tmp_path / "b", AREA, D0)
    assert int(a["complete"].sum()) == 1
    xr.testing.assert_identical(a, b)
