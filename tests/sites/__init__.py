"""Settings modules of the example project for the end-to-end tests' special configurations.

Each module starts from ``chatserver.settings`` and changes only what its tests are about;
start one with ``start_uwsgi(settings_module="tests.sites.<name>")``.
"""
