"""loadprobe inside Locust: `install` puts its listeners on Locust's event hooks.

Nothing in loadprobe registers a listener when it is imported, so a unit
test may import any module. A locustfile calls `install(events)` once, at
its top level (Locust imports the locustfile before it parses the command
line, in time for the options):

- ``init_command_line_parser``: loadprobe's options (locust_options.py);
- ``init``: terminals default to the topology's base_url;
- ``request``, ``init``, ``test_stopping``, ``test_stop``, ``quitting``:
  the raw-sample recorder of this process (recorder.py).
"""

from __future__ import annotations

from locust.event import Events

from loadprobe.locust_options import add_options, listen
from loadprobe.recorder import Recorder
from loadprobe.terminal import default_host


def install(hooks: Events) -> Recorder:
    """Register loadprobe's listeners on `hooks` (``locust.events``); the recorder."""
    recorder = Recorder()
    listen(hooks.init_command_line_parser, add_options)
    listen(hooks.init, default_host)
    listen(hooks.request, recorder.on_request)
    listen(hooks.init, recorder.on_init)
    listen(hooks.test_stopping, recorder.on_test_stopping)
    listen(hooks.test_stop, recorder.on_test_stop)
    listen(hooks.quitting, recorder.on_quitting)
    return recorder
