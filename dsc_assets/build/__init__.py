"""The build-system machinery over the graph: staleness, the gate, preflight, doctor, automation."""
