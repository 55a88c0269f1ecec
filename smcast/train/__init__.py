"""Training: land-cell data from the store, point sampling, the trainer, retrain/promote."""
