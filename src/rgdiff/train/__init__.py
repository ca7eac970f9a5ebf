"""Training: one loop (`train.loop.fit`: jitted step, parameter average, checkpoints, exact
resume, one rule for non-finite losses) under score models (`train.score`, denoising score
matching), continuous flows (`train.cnf`, RG objective or reverse KL) and the ground-state ansatz
(`rgdiff.quantum.train`); data parallelism over a one-dimensional `jax.sharding` mesh
(`train.parallel`).
"""
