"""One exception tree for both commands, `netwatch` and `loadprobe`::

    NetwatchError              raised on purpose: the command prints one line
    │                          (never a traceback) and exits 2
    ├── UserError              the operator's to fix: bad arguments or input,
    │   │                      a missing privilege, a port in use, a service
    │   │                      that is not running
    │   ├── TopologyError      topology.yaml unreadable or invalid; each
    │   │                      problem names file:line and key path
    │   ├── LabError           the lab cannot be built, inspected or changed
    │   ├── MqttSetupError     (netwatch.mqtt.errors) the publisher cannot
    │   │   │                  start as configured
    │   │   ├── BadBrokerUrl
    │   │   └── SpoolError
    │   │       └── SpoolLockedError
    │   ├── ScenarioError      (loadprobe.scenario) a run's options or
    │   │                      thresholds do not make a run
    │   └── PreflightError     (loadprobe.preflight) the system under test
    │                          is not ready for load
    └── RouteError             the kernel refused a route change: the agent
                               counts it and retries; a load test gives up
                               and puts the routes back

Exit codes, the same for both commands (the README's "Exit codes" table):

    0    success, or a verdict PASS
    1    a verdict FAIL: a load test's thresholds, `netwatch check` finding
         a file that is not a valid topology
    2    an error: any NetwatchError, or arguments argparse refuses
    3    `netwatch lab status`: the lab is not (fully) up
    130  interrupted (Ctrl-C), after putting back what the command changed

Everything else (programming errors) is a traceback on purpose.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_ERROR = 2
EXIT_NOT_UP = 3
EXIT_INTERRUPTED = 130


class NetwatchError(Exception):
    """Printed as ``<command> <sub-command>: <message>``, never as a traceback."""

    exit_code = EXIT_ERROR


def run_handler(prefix: str, command: Callable[[], int]) -> int:
    """Run a command's handler the way both commands end: its own exit code,
    or one line on stderr for a NetwatchError, or 130 after Ctrl-C."""
    try:
        return command()
    except NetwatchError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


class UserError(NetwatchError):
    """Bad input or a state the operator can fix; the message says how."""


class LabError(UserError):
    """The lab could not be built or inspected; the message is for the operator."""


class RouteError(NetwatchError):
    """A route change the kernel refused.  `split` is True when a change of
    several prefixes left them on different paths (even the rollback failed)."""

    def __init__(self, message: str, *, split: bool = False) -> None:
        super().__init__(message)
        self.split = split
