"""Everything rgdiff reads and writes: ensembles (HDF5), model directories, checkpoints, run
configs (TOML), provenance, atomic writes and output locks.
"""
