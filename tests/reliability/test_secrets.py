"""Secrets stay secret: the CDS key never reaches output, files or error messages, even when the
server quotes it back; a YAML config cannot run code."""

from __future__ import annotations

import functools
import traceback
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from smcast.cli import main
from smcast.config import load_config
from smcast.errors import ConfigError, DataUnavailableError
from smcast.grid import Grid
from smcast.ingest.pipeline import ingest
from smcast.sources.base import SOURCES
from smcast.sources.cds import CdsSource, _redact
from smcast.testing.cds_fake import FakeCDS
from smcast.testing.era5 import era5_grid, synthetic_hourly
from tests.conftest import AREA, sea_points
from tests.integration.test_cds_ingest import responder

pytest.importorskip("cdsapi")
pytestmark = pytest.mark.timeout(60)

KEY = "SECRET-5e1f0c7a-do-not-leak"
START = date(2024, 1, 30)
SETS = [f"grid.area={AREA}", "source.name=cds", "source.cds.latency_days=0",
        "source.cds.retries=1", "source.cds.backoff_seconds=1", "source.cds.timeout_seconds=5"]


@pytest.fixture(autouse=True)
def _home(monkeypatch, tmp_path) -> Path:
    """Credentials only in ``$HOME/.cdsapirc`` (written by ``rc``); no sleeping."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "CDSAPI_URL",
                "CDSAPI_KEY", "CDSAPI_RC", "SMCAST_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setitem(SOURCES, "cds", functools.partial(CdsSource, sleep=lambda s: None))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def world():
    lat, lon = era5_grid(AREA[2] - 0.5, AREA[0] + 0.5, AREA[1] - 0.5, AREA[3] + 0.5)
    return synthetic_hourly(lat, lon, START, 1, seed=7, sea=sea_points(lat, lon))


def rc(home: Path, cds: FakeCDS) -> None:
    home.mkdir(exist_ok=True)
    (home / ".cdsapirc").write_text(f"url: {cds.url}\nkey: {cds.key}\n")


def cli(*args: str):
    return CliRunner().invoke(main, [*args, "-v"], env={"SMCAST_CONFIG": ""},
                              catch_exceptions=False)


def sets(root: Path) -> list[str]:
    out = [f"data_dir={root / 'data'}", *SETS]
    return [a for s in out for a in ("--set", s)]


def assert_no_key_in_files(root: Path) -> int:
    """Every file under ``root`` (store, downloads, manifests, SQLite ledger), as bytes."""
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    return len(files)


def assert_no_key(result) -> None:
    assert KEY not in result.stdout and KEY not in result.stderr
    assert KEY not in result.output


def test_successful_ingest_at_debug_level_shows_and_stores_no_key(tmp_path, _home, world):
    with FakeCDS(responder(world), key=KEY) as cds:
        rc(_home, cds)
        result = cli("ingest", "--start", str(START), "--end", str(START), *sets(tmp_path))
    assert result.exit_code == 0, result.output
    assert cds.tokens_seen == {KEY}  # the key from ~/.cdsapirc was really used
    assert " DEBUG " in result.stderr  # -v really logged at debug level
    assert_no_key(result)
    assert assert_no_key_in_files(tmp_path / "data") > 5  # store chunks and downloads checked


def _fails_with_key(dataset: str, request: dict) -> bytes:
    raise RuntimeError(f"cannot serve this request for key {KEY}")


@pytest.mark.parametrize("respond, faults", [
    (None, {"submit": [403] * 4}),                  # 4xx: the body is in the client's message
    (None, {"poll": [404] * 4}),                    # the job 'vanished': submitted again
    (None, {"download": [502] * 4}),                # multiurl logs the error body itself
    (_fails_with_key, {}),                          # the job fails, its traceback quotes the key
    ("wrong-key", {}),                              # 401 for a key the server does not know
])
def test_hostile_server_quoting_the_key_is_redacted(tmp_path, _home, world, respond, faults):
    with FakeCDS(respond if callable(respond) else responder(world), key=KEY, echo_key=True,
                 faults=faults) as cds:
        rc(_home, cds)
        if respond == "wrong-key":  # the server quotes the key it expects; we send another
            cds.key = KEY
            (_home / ".cdsapirc").write_text(f"url: {cds.url}\nkey: {KEY}-other\n")
        result = cli("ingest", "--start", str(START), "--end", str(START), *sets(tmp_path))
        # and through the API, to inspect the exception itself
        cfg = load_config(None, [f"data_dir={tmp_path / 'data'}", *SETS], environ={})
        source = CdsSource(cfg, Grid.from_config(cfg.grid), sleep=lambda s: None)
        with pytest.raises(DataUnavailableError) as err:
            ingest(cfg, START, START, source=source)
    assert result.exit_code == 4, result.output
    assert "***" in result.stderr  # the server did quote the key, and it was blanked
    assert_no_key(result)
    text = "".join(traceback.format_exception(err.value))
    assert "failed after 2 attempt(s)" in text and KEY not in text and KEY not in repr(err.value)
    assert_no_key_in_files(tmp_path / "data")


def test_failed_forecast_records_no_key_in_the_ledger(tmp_path, _home, world):
    with FakeCDS(responder(world), key=KEY, echo_key=True, faults={"submit": [400] * 4}) as cds:
        rc(_home, cds)
        result = cli("forecast", "--date", "2024-02-05", "--model", "none", *sets(tmp_path))
    assert result.exit_code == 4, result.output
    ledger = tmp_path / "data" / "smcast.sqlite"
    assert ledger.is_file() and b"failed after 2 attempt(s)" in ledger.read_bytes()
    assert_no_key(result)
    assert_no_key_in_files(tmp_path / "data")


def test_redact_reads_the_key_from_env_or_cdsapirc(monkeypatch, _home):
    assert _redact(f"x {KEY} y") == f"x {KEY} y"  # no key configured: nothing to hide
    _home.mkdir()
    (_home / ".cdsapirc").write_text(f"url: http://x\nkey: {KEY}\n")
    assert _redact(f"x {KEY} y") == "x *** y"
    monkeypatch.setenv("CDSAPI_KEY", "OTHER-KEY")
    assert _redact("a OTHER-KEY b") == "a *** b"


# -- YAML config cannot execute code ----------------------------------------------------------
PAYLOADS = [
    '!!python/object/apply:os.system ["touch {pwned}"]',
    'data_dir: !!python/object/apply:os.system ["touch {pwned}"]',
    'grid: !!python/object/new:subprocess.Popen [["touch", "{pwned}"]]',
]


def _ingest(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["ingest", "--start", "2024-01-30", "--end", "2024-01-30",
                                     *args], env=env or {"SMCAST_CONFIG": ""},
                              catch_exceptions=False)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_yaml_config_file_cannot_run_code(tmp_path, payload):
    pwned = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(payload.format(pwned=pwned) + "\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config, environ={})
    for result in (_ingest("--config", str(config)), _ingest(env={"SMCAST_CONFIG": str(config)})):
        assert result.exit_code == 2, result.output
        assert f"config file {config} is not valid YAML" in result.stderr
    assert not pwned.exists()


def _set_payload(pwned: Path) -> str:
    return f'data_dir=!!python/object/apply:os.system ["touch {pwned}"]'


def test_yaml_in_set_cannot_run_code(tmp_path):
    pwned = tmp_path / "pwned"
    result = _ingest("--set", _set_payload(pwned))
    assert result.exit_code != 0 and "python/object/apply" in result.stderr
    assert not pwned.exists()


def test_yaml_in_set_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(None, [_set_payload(tmp_path / "pwned")], environ={})
