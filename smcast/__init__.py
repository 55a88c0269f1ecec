"""smcast: operational soil-moisture forecasts with physically-guided LSTMs (Geng et al., 2024)."""

try:  # pyproj must bind its own PROJ before ecCodes' wheel loads a bundled one globally,
    import pyproj  # noqa: F401  (else the interpreter can crash at exit; see sources/grib.py)
except ImportError:  # pragma: no cover
    pass

__version__ = "0.1.0"
