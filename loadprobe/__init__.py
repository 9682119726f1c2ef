"""loadprobe: degraded-mode load tests for the four towns' shared back-office.

    cli.py, run.py, compare.py   the `loadprobe` command and its sub-commands
    pipeline.py                  one run from checked inputs to a verdict and reports
    scenario.py                  a run's options and SLA thresholds, checked
    preflight.py                 is the system under test ready for load?
    netpath.py                   pin and check which town path carries the traffic
    orchestrate.py               Locust in its own processes (gevent, never beside asyncio)
    locustfile.py                what Locust loads: the terminal and the plugin
    locust_plugin.py, locust_options.py   the Locust hooks, registered explicitly
    terminal.py                  the 10-terminal workflow as a Locust user
    transactions.py              a terminal's transaction bookkeeping
    recorder.py, samples.py      raw samples out of Locust, and their stream to the run
    verdict.py                   SLA verdicts (pure)
    checks.py                    is each answer of the workflow right? (pure)
    live.py                      what a run shows while it runs: loadprobe_* metrics, display
    report/                      report.json, HTML with charts, JUnit XML
    pdfcheck.py                  does a certificate look like the real thing?

The system under test in the lab is `backoffice` (its own package).
Errors and exit codes: `netwatch.errors`.
"""

__version__ = "0.1.0"
