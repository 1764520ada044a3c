"""Runnable experiments: the LightningCLI entry point, YAML configs and benchmarks."""
