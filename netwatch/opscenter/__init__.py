"""The operations center (`netwatch opscenter`): every town's truth in one place.

ingest.py    checks each message from the broker (pure): accepted or a reason
fleet.py     the fleet's state, fed with checked messages (pure)
store.py     SQLite (WAL): event history, last states, chart samples
metrics.py   netwatch_fleet_* (read from the fleet at scrape time), netwatch_opscenter_*
web.py       the ASGI app: status page, JSON API, live stream, /metrics
page/        the pages' HTML, script and style, served by the service itself
service.py   the event loop: MQTT ingest, flushes, pruning, HTTP
cli.py       the command line
"""
