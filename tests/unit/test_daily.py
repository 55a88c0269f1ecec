"""Hourly → daily in store units, and the derived variables, against hand-made series."""

from datetime import date

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from smcast.errors import InputDataError
from smcast.ingest.daily import (Piece, daily_value, needed_times, specific_humidity, to_daily,
                                 unit_factor)
from smcast.variables import SOURCE_VARIABLES, VARIABLES


def piece(values, start="2024-03-05 00:00", units="m", freq="h") -> Piece:
    times = pd.date_range(start, periods=len(values), freq=freq)
    data = xr.DataArray(np.asarray(values, float)[:, None, None], dims=("time", "lat", "lon"),
                        coords={"time": times, "lat": [0.25], "lon": [0.25]},
                        attrs={"units": units})
    return Piece(data, "hourly" if freq == "h" else "daily", ["test.nc"])


def test_accumulated_daily_total_is_next_day_00utc():
    # running totals since 00 UTC: the 00 UTC stamp of D holds D-1's total (7.0), hours
    # 01..23 of D accumulate 1 mm per hour, and 00 UTC of D+1 holds D's total (24 mm)
    series = [7.0] + [h * 1e-3 for h in range(1, 24)] + [24e-3]
    assert daily_value(piece(series), "tp", date(2024, 3, 5))[0, 0] == pytest.approx(0.024)


def test_accumulated_radiation_becomes_daily_mean_flux():
    # 8.64e6 J m-2 over the day is a mean flux of 100 W m-2
    series = [0.0] * 24 + [8.64e6]
    value = daily_value(piece(series, units="J m**-2"), "ssrd", date(2024, 3, 5))
    assert value[0, 0] == pytest.approx(100.0)


def test_instantaneous_daily_mean_uses_hours_00_to_23():
    series = list(range(24)) + [1000.0]  # the next day's 00 UTC must not count
    value = daily_value(piece([270.0 + v for v in series], units="K"), "t2m", date(2024, 3, 5))
    assert value[0, 0] == pytest.approx(270.0 + 11.5)


def test_missing_hours_are_named():
    series = [280.0] * 13  # 00..12 UTC only
    with pytest.raises(InputDataError, match=r"t2m: missing 11 hours \(13:00…23:00 UTC\)"):
        daily_value(piece(series, units="K"), "t2m", date(2024, 3, 5))


def test_missing_next_day_step_explains_where_it_lives():
    with pytest.raises(InputDataError, match="00 UTC step of the next day"):
        daily_value(piece([0.0] * 24), "tp", date(2024, 3, 5))


def test_daily_files_take_the_value_of_the_day():
    value = daily_value(piece([0.01, 0.02], freq="D"), "tp", date(2024, 3, 6))
    assert value[0, 0] == pytest.approx(0.02)


def test_units_store_units_accepted_and_others_rejected():
    assert unit_factor("ssrd", "W m-2") == 1.0
    assert unit_factor("ssrd", "J m-2") == pytest.approx(1 / 86400)
    assert unit_factor("t2m", None) == 1.0
    with pytest.raises(InputDataError, match="t2m has units 'degC'.*'K'"):
        unit_factor("t2m", "degC", ["x.nc"])


def test_to_daily_lists_every_problem_and_the_files():
    pieces = {"t2m": piece([280.0] * 5, units="K")}
    with pytest.raises(InputDataError) as err:
        to_daily(pieces, date(2024, 3, 5), ("t2m", "tp"))
    text = str(err.value)
    assert "t2m: missing 19 hours" in text and "tp: variable not found" in text
    assert "test.nc" in text


def test_to_daily_adds_derived_variables():
    day = date(2024, 3, 5)
    pieces = {}
    for name in SOURCE_VARIABLES:
        lo, hi = VARIABLES[name].valid_range
        n = 25 if not name == "ssrd" else 25
        pieces[name] = piece([(lo + hi) / 2] * n, units=VARIABLES[name].native_units[0])
    pieces["u10"] = piece([3.0] * 25, units="m s**-1")
    pieces["v10"] = piece([4.0] * 25, units="m s**-1")
    out = to_daily(pieces, day, SOURCE_VARIABLES)
    assert out["wind"][0, 0] == pytest.approx(5.0)
    assert set(out) == set(VARIABLES)


@pytest.mark.parametrize("td_c, p", [(0.0, 101325.0), (20.0, 100000.0), (-20.0, 70000.0),
                                     (26.0, 95000.0)])
def test_specific_humidity_matches_bolton(td_c, p):
    # independent reference: Bolton (1980) vapour pressure, q = 0.622 e / (p - 0.378 e)
    e = 611.2 * np.exp(17.67 * td_c / (td_c + 243.5))
    expected = 0.622 * e / (p - 0.378 * e)
    got = specific_humidity(np.array(td_c + 273.15), np.array(p))
    assert got == pytest.approx(expected, rel=0.01)


def test_specific_humidity_exact_at_triple_point():
    # at Td = 273.16 K Tetens gives exactly 611.21 Pa
    e = 611.21
    expected = 0.621981 * e / (1e5 - (1 - 0.621981) * e)
    assert specific_humidity(np.array(273.16), np.array(1e5)) == pytest.approx(expected, rel=1e-12)


def test_point_with_data_in_some_hours_only_is_damaged():
    series = [280.0] * 24 + [281.0]
    series[5] = np.nan
    with pytest.raises(InputDataError, match="data in some hours but not others"):
        daily_value(piece(series, units="K"), "t2m", date(2024, 3, 5))


def grid_piece(units: str, seed: int = 0, nlat: int = 11, nlon: int = 7) -> Piece:
    """25 hourly (lat, lon) float32 fields from 2024-03-05 00 UTC, a NaN 'sea' corner."""
    rng = np.random.default_rng(seed)
    values = (280.0 + 10.0 * rng.standard_normal((25, nlat, nlon))).astype(np.float32)
    values[:, :3, :2] = np.nan
    times = pd.date_range("2024-03-05 00:00", periods=25, freq="h")
    data = xr.DataArray(values, dims=("time", "lat", "lon"),
                        coords={"time": times, "lat": np.arange(nlat) * 0.1,
                                "lon": np.arange(nlon) * 0.1}, attrs={"units": units})
    return Piece(data, "hourly", ["grid.nc"])


@pytest.mark.parametrize("name, units", [("t2m", "K"), ("ssrd", "J m**-2"), ("tp", "m")])
@pytest.mark.parametrize("rows", [1, 3, 4, 11, 256])
def test_row_blocks_give_the_whole_array_result_bit_for_bit(name, units, rows):
    day = date(2024, 3, 5)
    p = grid_piece(units)
    # the whole-array computation (before row blocks): every needed hour at once
    positions = np.searchsorted(p.data["time"].values, needed_times(name, day, "hourly"))
    values = np.asarray(p.data.values)[positions].astype(np.float64)
    whole = (values[0] if len(positions) == 1 else values.mean(axis=0)) * unit_factor(
        name, units)
    got = daily_value(p, name, day, rows=rows)
    assert got.dtype == np.float64 and got.shape == (11, 7)
    np.testing.assert_array_equal(got, whole)


def test_row_blocks_count_damaged_points_over_all_blocks():
    p = grid_piece("K")
    p.data.values[5, 0, 4] = np.nan  # block 0 (rows 0…3)
    p.data.values[7, 9, 6] = np.nan  # block 2 (rows 8…10)
    with pytest.raises(InputDataError, match="t2m on 2024-03-05: 2 point"):
        daily_value(p, "t2m", date(2024, 3, 5), rows=4)
