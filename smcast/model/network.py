"""The core network of PHY-LSTM / PHYs-LSTM (Geng et al. 2024; LandBench's ``LSTM``).

One (or more) LSTM layers over a window of daily features, the hidden state of the **last** time
step, dropout, and a linear head with one output per forecast lead. The network knows nothing
about variable names or units: it maps normalised features to the normalised target.
"""

from __future__ import annotations

import torch
from torch import nn


class SoilMoistureLSTM(nn.Module):
    """LSTM → last step → dropout → linear.

    Args:
        n_features: features per time step (the paper: 8 dynamic + 6 static = 14).
        n_leads: outputs, one per forecast lead (the paper: 1).
        hidden_size: LSTM hidden units (the paper: 128).
        num_layers: stacked LSTM layers (the paper: 1).
        dropout: dropout probability on the last step's hidden state (the paper: 0.15).
    """

    def __init__(self, n_features: int, n_leads: int = 1, hidden_size: int = 128,
                 num_layers: int = 1, dropout: float = 0.15) -> None:
        super().__init__()
        _check_positive(n_features=n_features, n_leads=n_leads, hidden_size=hidden_size,
                        num_layers=num_layers)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), not {dropout}")
        self.n_features = int(n_features)
        self.n_leads = int(n_leads)
        self.lstm = nn.LSTM(input_size=n_features, hidden_size=hidden_size,
                            num_layers=num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, n_leads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features (batch, seq, n_features) float32 → normalised target
        (batch, n_leads)."""
        out, _ = self.lstm(x)
        return self.head(self.dropout(out[:, -1, :]))


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, not {value}")
