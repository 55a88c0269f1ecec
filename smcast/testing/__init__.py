"""Seeded synthetic-data factories and file writers in the exact ERA5-Land/CDS layouts, shared by
the tests, the benchmarks and the CDS fake. Library code, so users can test their own set-ups."""
