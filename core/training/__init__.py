"""Training: the loop, jobs (one process per run), learning-rate x batch-size grids and seed groups, sweeps on a Ray cluster."""
