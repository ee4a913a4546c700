"""Benchmark scripts: they print numbers (ratios within one run); tests never time anything."""
