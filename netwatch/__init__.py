"""netwatch: network failover monitor for the four towns' shared back-office."""
