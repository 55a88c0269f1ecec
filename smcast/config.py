"""smcast's one typed configuration, loaded from YAML.

Resolution order: built-in defaults (the offline demo) ← ``--config FILE`` or ``$SMCAST_CONFIG``
← ``--set key.path=value`` overrides. Unknown keys are rejected with their path and the valid
names. Relative paths are taken relative to the current working directory; operational configs
should use absolute paths (see ``config/operational-*.yaml``).
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smcast.errors import ConfigError

ENV_VAR = "SMCAST_CONFIG"


class Section(BaseModel):
    """Base for every config section: unknown keys are an error, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True,
                              use_attribute_docstrings=True)


class GridConfig(Section):
    """The store's regular latitude/longitude grid. Cells are bounded at multiples of
    ``resolution`` (0.5° cells are centred on .25/.75)."""

    resolution: float = Field(0.5, gt=0, le=5)
    """Cell size in degrees. 360 and 180 must be multiples of it."""
    area: tuple[float, float, float, float] | None = None
    """Optional sub-domain [north, west, south, east] in degrees (west/east in -180…180); the
    edges are rounded outwards to cell bounds. None: the whole globe."""
    min_land_fraction: float = Field(0.5, ge=0, le=1)
    """A cell is land when at least this fraction of its area holds valid (non-sea) source data."""
    exclude_south_of: float | None = -60.0
    """Cells whose centre lies south of this latitude are never land (the paper drops
    Antarctica). None keeps them."""

    @field_validator("resolution")
    @classmethod
    def _divides_globe(cls, value: float) -> float:
        for span in (180.0, 360.0):
            n = span / value
            if abs(n - round(n)) > 1e-6:
                raise ValueError(f"{span:g} is not a multiple of {value:g}; use e.g. 0.1, 0.25, "
                                 "0.5 or 1")
        return value

    @field_validator("area")
    @classmethod
    def _area_order(cls, value: tuple[float, float, float, float] | None):
        if value is not None:
            north, west, south, east = value
            if not (-90 <= south < north <= 90 and -180 <= west < east <= 180):
                raise ValueError("area must be [north, west, south, east] with south < north "
                                 "and west < east, longitudes in -180…180")
        return value


class StoreConfig(Section):
    """The daily Zarr store."""

    path: Path | None = None
    """Path of the Zarr store; default ``<data_dir>/store.zarr``."""
    compression_level: int = Field(1, ge=1, le=9)
    """zstd level for the store's chunks (1: about as small as 3 for these fields, twice as
    fast to write)."""


class DemoSourceConfig(Section):
    """The offline demo source: an ERA5-Land-like simulated world on real land cells."""

    seed: int = 42
    """Random seed of the simulated world (statics and weather)."""
    epoch: date = date(2020, 1, 1)
    """First day the demo world exists; it is simulated forward from here. Days before are an
    error."""
    latency_days: int = Field(5, ge=0, le=60)
    """Imitated ERA5-Land latency: the newest day available is today (UTC) minus this."""
    cache_dir: Path | None = None
    """Where state checkpoints are cached so later requests need not re-simulate from the
    epoch; default ``<data_dir>/cache/demo``."""


class DirectorySourceConfig(Section):
    """A local mirror of ERA5-Land NetCDF or GRIB files (old or new CDS layout)."""

    path: Path | None = None
    """Root directory of the mirror (``smcast ingest --input DIR`` overrides it)."""
    pattern: str = "**/*.nc"
    """Glob pattern below ``path`` (``**`` recurses); e.g. ``*.grib`` or ``era5land_*.nc``."""
    frequency: Literal["hourly", "daily"] = "hourly"
    """hourly: ERA5-Land hourly files (accumulations since 00 UTC). daily: one value per day —
    daily means of instantaneous fields and daily totals of accumulated ones."""
    latency_days: int = Field(0, ge=0, le=60)
    """Days behind today (UTC) that the mirror is expected to lag; informational for planning."""


class CdsSourceConfig(Section):
    """The Copernicus Climate Data Store through ``cdsapi``. Credentials come from
    ``~/.cdsapirc`` or ``CDSAPI_URL``/``CDSAPI_KEY`` and are never logged or stored by smcast."""

    mode: Literal["daily", "hourly"] = "daily"
    """daily: instantaneous variables from ``derived-era5-land-daily-statistics`` (daily_mean)
    plus accumulated ones as the single 00 UTC step of the next day from
    ``reanalysis-era5-land`` (1/24 of the hourly volume). hourly: all 24 hours from
    ``reanalysis-era5-land``."""
    split: Literal["day", "month"] = "month"
    """One request per day or per month (months are split at the requested range)."""
    download_dir: Path | None = None
    """Where downloaded files are kept (resumable); default ``<data_dir>/downloads/cds``."""
    retries: int = Field(4, ge=0, le=20)
    """Retries of a failed request (exponential backoff)."""
    backoff_seconds: float = Field(30.0, ge=0)
    """First wait between retries; doubled each time."""
    timeout_seconds: float = Field(600.0, gt=0)
    """Network timeout of one HTTP call."""
    poll_seconds: float = Field(30.0, gt=0)
    """Longest pause between two status polls of a queued request."""
    max_queue_hours: float = Field(12.0, gt=0)
    """A request still queued/running on the CDS after this long is abandoned (and cancelled):
    the run fails with exit 4 (DataUnavailableError) naming the request and the limit, and the
    next run submits it again."""
    latency_days: int = Field(5, ge=0, le=60)
    """ERA5-Land's latency: days newer than today minus this are not requested."""


SourceName = Literal["demo", "directory", "cds"]


class SourceConfig(Section):
    """Which source feeds the store, and each source's settings."""

    name: str = "demo"
    """Registered source: demo, directory or cds."""
    demo: DemoSourceConfig = DemoSourceConfig()
    directory: DirectorySourceConfig = DirectorySourceConfig()
    cds: CdsSourceConfig = CdsSourceConfig()


class IngestConfig(Section):
    """How days are aggregated and written."""

    batch_days: int = Field(16, ge=1, le=366)
    """Days held in memory and written to the store together (lowered automatically so that a
    batch stays under 512 MB: one day at a time on the global 0.1° grid)."""
    workers: int = Field(0, ge=0, le=64)
    """Dask workers (one process, one thread each) of the local dask.distributed cluster that
    reads and aggregates days in parallel for file sources (directory, cds); 0: one per CPU core
    (at most 8); 1: everything in this process, no cluster (ingests of one day never start one).
    Ignored when ``scheduler`` is set."""
    scheduler: str | None = None
    """Address of a running dask scheduler (e.g. ``tcp://10.0.0.5:8786``) whose workers ingest
    multi-day ranges; its workers need smcast installed and the input files at the same paths.
    null: a local cluster of ``workers`` processes."""
    memory_per_worker: str = "4GiB"
    """Memory limit of each local dask worker (dask's nanny spills, pauses, and restarts a worker
    that goes over it), e.g. ``4GiB``, ``6GB`` or ``auto`` (the machine's memory / workers).
    Workers of a remote ``scheduler`` have the limit they were started with."""
    check_ranges: bool = True
    """Reject values outside the vocabulary's physical ranges (recommended)."""

    @field_validator("scheduler")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        prefixes = ("tcp://", "tls://", "ucx://")
        if value is not None and (not value.startswith(prefixes)
                                  or not value.partition("://")[2].strip()):
            raise ValueError(f"{value!r} is not a dask scheduler address: use e.g. "
                             "tcp://10.0.0.5:8786 (tcp://, tls:// or ucx://), or null for a "
                             "local cluster")
        return value

    @field_validator("memory_per_worker")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        import re

        units = r"(b|kb|mb|gb|tb|kib|mib|gib|tib|k|m|g|t|ki|mi|gi|ti)?"
        if value.strip().lower() != "auto" and not re.fullmatch(
                rf"\s*\d+(\.\d+)?\s*{units}\s*", value, re.IGNORECASE):
            raise ValueError(f"{value!r} is not a memory size: use e.g. 4GiB, 6GB or auto")
        return value


PAPER_DYNAMIC = ("t2m", "u10", "v10", "tp", "sp", "q", "ssrd", "strd")
PAPER_STATIC = ("elevation", "clay", "sand", "silt", "storage_capacity", "land_cover")


class ModelConfig(Section):
    """The network and its physics-guided variant (see ``smcast.model.variants``)."""

    variant: str = "phys"
    """lstm (plain RMSE), phy (surface water balance, Eq. 10) or phys (with the deep-layer
    storage change, Eq. 11)."""
    weights: tuple[float, float] | None = None
    """(λ1, λ2) of the loss; None: the variant's default (lstm 1:0, phy 5:5, phys 1:9)."""
    snow_sign: Literal["paper", "mass"] = "paper"
    """Sign of ΔSD in the water input: the paper's +ΔSD, or mass balance's −ΔSD."""
    leads: list[int] = [1, 2, 3, 4, 5, 6]
    """Days ahead of the last input day. [1] is the paper's set-up; 1…6 reaches today + 1
    from forcing that lags ERA5-Land's ~5 days."""
    seq_len: int = Field(7, ge=1, le=365)
    """Input window in days (the paper: 7)."""
    hidden_size: int = Field(128, ge=1)
    """LSTM hidden units (the paper: 128)."""
    num_layers: int = Field(1, ge=1, le=8)
    """LSTM layers (the paper: 1)."""
    dropout: float = Field(0.15, ge=0, lt=1)
    """Dropout on the LSTM output (the paper: 0.15)."""
    dynamic_inputs: list[str] = list(PAPER_DYNAMIC)
    """Daily forcing variables fed to the network, in order (the paper's eight)."""
    static_inputs: list[str] = list(PAPER_STATIC)
    """Static fields repeated along the window (the paper's six)."""


class TrainConfig(Section):
    """The trainer (point sampling after Fang & Shen, early stopping)."""

    start: date | None = None
    """First training day; None: the store's first complete day."""
    end: date | None = None
    """Last day of training + validation; None: ``test_days`` before the store's latest
    complete day."""
    test_days: int = Field(365, ge=0)
    """Held-out days after ``end`` used to compare candidate and current models."""
    validation_fraction: float = Field(0.25, gt=0, lt=1)
    """Chronological share of the training period used for validation (the paper: 25 %)."""
    batch_size: int = Field(64, ge=1)
    """Land cells per iteration, sharing one random window start (the paper's code: 64)."""
    iterations_per_epoch: int = Field(300, ge=1)
    """Iterations in an "epoch" (the paper's code: 300)."""
    max_epochs: int = Field(1000, ge=1)
    """Upper bound on epochs (the paper: 1000)."""
    validate_every: int = Field(20, ge=1)
    """Epochs between validations (the paper's code: 20)."""
    patience: int = Field(10, ge=1)
    """Validations without improvement before stopping (the paper's code: 10)."""
    validation_cell_stride: int = Field(40, ge=1)
    """Validate on every n-th land cell (the paper's code: 40)."""
    max_cells: int | None = Field(None, ge=1)
    """Train on a seeded random subset of this many land cells; None: every land cell. Set it
    on fine global grids (0.1°: ~1.6 million land cells; e.g. 200000): each process of a
    torchrun job holds max_cells / processes cells x training-to-test days x (n_dyn + 8) x 4
    bytes. Scalers are still fitted on every land cell."""
    learning_rate: float = Field(1e-3, gt=0)
    """Adam learning rate (the paper: 1e-3)."""
    seed: int = 42
    """Seed of sampling, initialisation and dropout."""
    deterministic: bool = False
    """torch deterministic algorithms (slower on GPU; bit-for-bit repeatable runs)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available, else CPU."""
    promote: Literal["if-better", "always", "never"] = "if-better"
    """Whether ``smcast retrain`` makes the candidate the current model."""
    promote_metric: Literal["KGE", "R", "R2", "RMSE"] = "KGE"
    """Median metric (lead 1, test period) a candidate must beat the current model on."""


class ForecastConfig(Section):
    """The daily forecast run and its products."""

    output_dir: Path | None = None
    """Where products go; default ``<data_dir>/forecasts``."""
    model: str | None = None
    """Model name; None: the current model (``smcast models``)."""
    batch_size: int = Field(0, ge=0)
    """Land cells per forward pass; 0: chosen from the device's free memory."""
    band_cells: int = Field(131072, ge=1)
    """Land cells read and predicted together (a band of contiguous cell numbers, aligned to
    the store's row chunks); bounds the run's memory: about band_cells x (seq_len +
    consistency_days) x (n_dyn + 8) x 4 bytes per band (~310 MB with the defaults). The global
    0.5° grid (61 787 cells) is one band; the 0.1° grid (~1.6 million) about 13."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Arithmetic of the network's forward pass (torch.autocast): fp32 (exact, the default),
    bf16 (CPU or CUDA) or fp16 (CUDA only). The outputs are float32 m3 m-3 either way."""
    consistency_days: int = Field(30, ge=1, le=365)
    """Recent verifiable days the model is re-run on for the consistency layer (Eq. 19)."""
    consistency_threshold: float = Field(0.5, ge=0, le=1)
    """A cell whose recent consistency rate is at least this is flagged consistent."""
    filenames: Path | None = None
    """YAML of file-name patterns; default ``templates/filenames.yaml``."""


class OperationsConfig(Section):
    """Unattended operation: the run ledger, catch-up and health checks."""

    database: Path | None = None
    """SQLite file of the run ledger and the verification table; default
    ``<data_dir>/smcast.sqlite``."""
    catch_up_days: int = Field(7, ge=1, le=366)
    """``forecast --catch-up`` produces the missing issue dates among the last this many days
    (today included), oldest first; older gaps are reported, not filled."""
    stale_after_days: int = Field(2, ge=1)
    """``smcast status`` fails when the newest forecast was issued longer ago than this."""


class ScheduleConfig(Section):
    """The built-in daemon (``smcast schedule``, APScheduler 3.x)."""

    cron: str = "30 6 * * *"
    """When the daily job runs: a crontab expression (minute hour day month weekday)."""
    timezone: str = "UTC"
    """Time zone of ``cron`` (IANA name)."""
    misfire_grace_hours: float = Field(6.0, gt=0)
    """A run missed (daemon down, machine asleep) still starts if it is at most this late;
    several missed runs are coalesced into one."""
    jobstore: Path | None = None
    """SQLite job store that keeps the schedule across restarts; default
    ``<data_dir>/scheduler.sqlite``."""
    catch_up_at_start: bool = True
    """On start-up, run the job at once when issue dates within ``operations.catch_up_days``
    lack their forecast."""

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a crontab expression ({exc}); e.g. '30 6 * * *'") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except (KeyError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or "
                             "Europe/Berlin") from None
        return value


class Config(Section):
    """The whole smcast configuration."""

    data_dir: Path = Path("smcast-data")
    """Root for the store, caches and downloads unless their own paths are set."""
    grid: GridConfig = GridConfig()
    store: StoreConfig = StoreConfig()
    source: SourceConfig = SourceConfig()
    ingest: IngestConfig = IngestConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    forecast: ForecastConfig = ForecastConfig()
    operations: OperationsConfig = OperationsConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @property
    def store_path(self) -> Path:
        """The Zarr store's path."""
        return self.store.path or self.data_dir / "store.zarr"

    @property
    def database_path(self) -> Path:
        """The SQLite run ledger and verification table."""
        return self.operations.database or self.data_dir / "smcast.sqlite"

    @property
    def output_dir(self) -> Path:
        """Where forecast products go."""
        return self.forecast.output_dir or self.data_dir / "forecasts"

    def dump(self) -> str:
        """The resolved configuration as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                environ: dict[str, str] | None = None) -> Config:
    """Load the configuration: ``path`` or ``$SMCAST_CONFIG`` (if set) over the defaults, then
    ``key.path=value`` overrides (values parsed as YAML). Raises ConfigError with the key's path."""
    env = os.environ if environ is None else environ
    path = path or env.get(ENV_VAR) or None
    raw = _read_yaml(Path(path)) if path else {}
    for item in overrides:
        _apply_override(raw, item)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source=str(path) if path else "defaults")) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing file with "
                          f"--config or unset ${ENV_VAR}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}\nfix the syntax at the "
                          "line and column shown") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. --set grid.resolution=1")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc.problem}); quote "
                          "it, e.g. --set 'key=\"text\"'") from None


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = _valid_names(err["loc"][:-1])
            lines.append(f"  unknown key {loc!r}; valid names here: {', '.join(valid)}")
        else:
            lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _valid_names(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
