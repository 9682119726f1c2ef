"""netwatch agent: probes each path of one town, fails over, publishes."""
