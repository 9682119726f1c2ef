"""Failover drills and the pre-cutover acceptance campaign."""
