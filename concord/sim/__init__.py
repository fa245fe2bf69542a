"""
Deterministic simulation of a Concord cluster (docs/simulation.md), and the linearizability checker.

The real driver (concord.node.driver), raft core and kv state machine run over a fake
network, fake disks, virtual time and one seed. Entry points:

- `python -m concord.sim --seeds N --nodes 5` / `--seed S --trace` (see __main__.py);
- `concord.sim.cluster.run_seed(seed, nodes)` -> SimResult (violations, digest, ...);
- `concord.sim.linearizability.check_history(ops)` for any recorded KV history;
- `concord.sim.buggify.buggify(site)`, inert outside a simulation run.

Kept import-free on purpose: production code imports `concord.sim.buggify`, and
importing the whole simulator from here would make that a cycle.
"""
