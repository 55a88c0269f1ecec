"""Product writers: CF/ACDD NetCDF, Cloud-Optimized GeoTIFF and quicklooks, written atomically."""
