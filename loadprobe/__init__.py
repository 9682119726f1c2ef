"""loadprobe: degraded-mode load tests for the four towns' shared back-office,
and the reference data-center application those tests can run against."""

__version__ = "0.1.0"


class CliError(Exception):
    """A user mistake or an environment problem (port in use, unwritable path).

    Command handlers raise it with a one-line message; `loadprobe.cli.main`
    prints that line to stderr and exits 2, without a traceback.
    """
