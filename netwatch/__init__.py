"""netwatch: network failover monitor for the four towns' shared back-office.

constants.py   numbers several packages share: SO_MARK, the route protocol (91), metric prefixes
errors.py      the one exception tree and exit-code table of both commands
messages.py    the MQTT contract between agents and the operations center (pure)
throttle.py    say a thing once: rate-limited log lines
topology/      topology.yaml: typed model, loader with file:line errors, the id rule
health/        the pure health core: windows, path state machine, selector, rounds, simulator
agent/         one town's agent: probes, runner, routes, link watch, metrics
mqtt/          the agent's publisher and its durable event spool
opscenter/     the operations center: ingest, fleet, store, status page, API, fleet metrics
drill/         failover drills and the pre-cutover acceptance campaign: runner, observer,
               measurements and verdicts, schedules, reports
lab/           the four-town lab in network namespaces: plan, run dir, services, links
emulator/      the user-space link emulator (delay, jitter, loss, rate, cut) over TUN
check.py       `netwatch check`
hold.py        `netwatch hold`: a maintenance hold through the agent's control socket
cli.py         the `netwatch` command
"""
