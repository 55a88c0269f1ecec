"""Reliability: bad inputs, injected faults, kills at random points, security checks."""
