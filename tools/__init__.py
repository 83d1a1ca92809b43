"""Development helpers: real Redis and uWSGI processes for the demo, tests and benchmarks."""
