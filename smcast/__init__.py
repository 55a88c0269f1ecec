"""smcast: operational soil-moisture forecasts with physically-guided LSTMs (Geng et al., 2024)."""

__version__ = "0.1.0"
