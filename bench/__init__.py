"""Benchmarks for sora-bot; see bench/README.md. Not tests: pytest does not collect them."""
