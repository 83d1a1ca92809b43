"""The smallest ws4redis site the benchmark runs under uWSGI: WebSockets only."""
