"""`ravectl`, the operator's tool: status and diagnose over a real or simulated cluster.

Layout (imports go downward only): `statekeys` (the /debug/state contract), `output` (tables and
JSON), `status` and `checks` (pure: facts in, records out), `target` and `collect` (I/O: the API
server, agents' observe endpoints, commands on a node), `cli` (argument parsing, exit codes).
"""
