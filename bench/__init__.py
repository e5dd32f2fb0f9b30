"""Benchmarks and the loopback OpenAI-compatible server they and the tests talk to (see BENCHMARKS.md)."""
