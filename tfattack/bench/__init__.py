"""Benchmarks behind `scripts/benchmark.py`: model speed, real-model accuracy, attack speed, transfer."""
