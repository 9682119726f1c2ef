"""Numbers and names that several packages share, defined once.

The agent, the lab, loadprobe's path pinning, the benchmarks and the tests
all speak to the same kernel and the same Prometheus; what they must agree
on lives here and nowhere else.
"""

from __future__ import annotations

from typing import Final

# -- sockets ---------------------------------------------------------------
# <asm-generic/socket.h>; Python's socket module does not export it.
# Setting it needs CAP_NET_ADMIN, even to 0.
SO_MARK: Final = 36

# -- routes ----------------------------------------------------------------
# netwatch's route protocol number: every route the agent (or the lab, or a
# load test pinning a path) writes carries it, so netwatch knows what it
# owns and never touches another protocol's routes.  Named for `ip route`
# by deploy/iproute2/rt_protos.d-netwatch.conf ("91 netwatch").
RTPROT_NETWATCH: Final = 91
RTPROT_NAME: Final = "netwatch"
MAIN_TABLE: Final = 254  # RT_TABLE_MAIN

# -- metrics ---------------------------------------------------------------
# Every metric a component exports starts with its prefix.
METRIC_PREFIX_NETWATCH: Final = "netwatch_"
METRIC_PREFIX_LOADPROBE: Final = "loadprobe_"

# -- HTTP endpoints --------------------------------------------------------
# Every command that serves HTTP (agent and opscenter, loadprobe run and
# compare) takes the exporter-toolkit web configuration file the same way;
# netwatch.webconfig reads it.  Here, not there, so that loadprobe's parser
# stays cheap to import.
WEB_CONFIG_OPTION: Final = "--web-config-file"
WEB_CONFIG_HELP: Final = (
    "exporter-toolkit web configuration file (YAML, as node_exporter's --web.config.file) "
    "for this HTTP endpoint: TLS (tls_server_config: cert_file, key_file; client_auth_type "
    "NoClientCert or RequireAndVerifyClientCert with client_ca_file; min_version TLS12 or "
    "TLS13) and basic auth (basic_auth_users: USER: HASH, where each password is a bcrypt "
    "hash, never the password itself, e.g. from htpasswd -nBC 10 \"\" | tr -d ':\\n'); "
    "relative paths are from the file's directory (default: plain HTTP, no auth)"
)
