"""Training: one loop (`train.loop.fit`: jitted step, parameter average, checkpoints, exact
resume, one rule for non-finite losses) under score models (`train.score`, denoising score
matching), continuous flows (`train.cnf`, RG objective or reverse KL) and the ground-state ansatz
(`rgdiff.quantum.train`); where a model starts (`train.initial`: the stationary law's score and
the closed-form score-matching couplings of the data); data parallelism over a one-dimensional `jax.sharding` mesh
(`rgdiff.parallel`).
"""
