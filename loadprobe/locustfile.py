"""The acceptance test's locustfile: ten town office terminals.

`loadprobe run` drives it; it also works on its own for people who know
Locust (configuration from options, environment variables and topology.yaml):

    LOADPROBE_PASSWORD=lab-password locust -f loadprobe/locustfile.py \\
        --town nishiki --users 10 --spawn-rate 10 --run-time 5m --headless

Options (or environment variables): --town (LOADPROBE_TOWN), --topology
(LOADPROBE_TOPOLOGY, default topology.yaml), --think-time MIN,MAX
(LOADPROBE_THINK_TIME), --samples-file (LOADPROBE_SAMPLES), --host
(default: loadtest.base_url). The password comes from the environment
variable or file named in loadtest.credentials. At the end it prints the
SLA verdict over the exact samples and exits 0 (pass) or 1 (fail).
"""

from locust import events

from loadprobe.locust_plugin import install
from loadprobe.terminal import Terminal

__all__ = ["Terminal"]  # the one user class Locust finds here

install(events)  # loadprobe's options, default host and sample recorder
