"""netwatch lab: the four-town network in namespaces, links emulated in user space."""
