"""The reference data-center application (`python -m backoffice`, or `loadprobe target`).

A realistic stand-in for the four towns' shared municipal back-office:
resident ledger (SQLite), logon sessions, certificate PDFs, tax batch jobs,
the client start-up bundle, and its own health and Prometheus metrics. The
lab runs it in the data center's namespace; loadprobe's tests run against
it. It imports neither netwatch nor loadprobe.

What lives where:

- towns: the four towns, their areas and the 22 business systems (data).
- names: common family and given names with their readings (data).
- seeding: the synthetic residents of a town, deterministic from a seed.
- kana: kana normalisation for name searches.
- tax: the individual resident tax of one resident (pure arithmetic).
- ledger: the SQLite resident ledger: schema, seeding, queries.
- certificate: a 住民票の写し rendered as a one-page PDF.
- bundle: the client start-up bundle (manifest and assets, with ETags).
- batch: tax recalculation jobs in a process pool.
- auth: terminal users, the lab password and logon sessions.
- models: the HTTP API's request and response bodies (pydantic).
- deps: the application state and the session, as FastAPI dependencies.
- endpoints: the HTTP endpoints (operations, application start, the API).
- metrics: the application's own Prometheus metrics and their middleware.
- app: the application factory that wires the pieces together.
- config: the settings of one instance and their defaults.
- server: binding, the one-server-per-ledger lock, serving with uvicorn.
- command: the command line (options, one-line errors, exit codes).
- __main__: `python -m backoffice`.

Names that outside users already rely on keep their old spelling: the
metrics are `loadprobe_target_*`, the password variable is
`LOADPROBE_TARGET_PASSWORD`, the default ledger is
`$XDG_STATE_HOME/loadprobe/target.sqlite3`.
"""

__version__ = "0.1.0"  # the project's version (pyproject.toml), as loadprobe.__version__
