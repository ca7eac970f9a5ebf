"""Training loops: score models (denoising score matching) and continuous flows (RG objective,
reverse KL), with parameter averaging, checkpoints and exact resume; data parallelism over a
one-dimensional `jax.sharding` mesh (`train.parallel`).
"""
