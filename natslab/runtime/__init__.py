"""Servers and their lifecycle: backends, topologies, session, clean-up, config, monitoring, connect, waiting."""
