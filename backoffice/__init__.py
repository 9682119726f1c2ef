"""The reference data-center application (`loadprobe target`).

A realistic stand-in for the four towns' shared municipal back-office:
resident ledger (SQLite), logon sessions, certificate PDFs, tax batch jobs,
the client start-up bundle, and its own health and Prometheus metrics.

Modules: towns, names, seeding, kana, tax (pure data and logic); ledger,
certificate, bundle, batch, auth (the work); models, deps, endpoints, app,
metrics (HTTP); config, server, command (running it).
"""
