"""The operations center's monitoring, generated from topology.yaml: Grafana
dashboards and provisioning, Prometheus configuration and alert rules.

Only the dashboards need grafana-foundation-sdk (a development dependency);
the rules and Prometheus's configuration, which the lab writes at every
start, need nothing beyond the package.
"""

# Fixed, so that links (an alert's dashboard_url, bookmarks) keep working.
FLEET_UID, TOWN_UID, DRILLS_UID = "netwatch-fleet", "netwatch-town", "netwatch-drills"
DATASOURCE_UID = "netwatch-prometheus"  # the provisioned Prometheus datasource
