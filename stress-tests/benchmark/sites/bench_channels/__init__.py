"""A tiny Django Channels 4 project: one broadcast consumer, for the benchmark's peers."""
