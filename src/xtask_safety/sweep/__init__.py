"""Sweeps: grids of data -> train -> generate -> score, cached by a hash of each stage's inputs.

* :mod:`.config`  the sweep recipe (``recipes/sweeps/*.yaml``) and its expansion into cells;
* :mod:`.cache`   stage keys and the on-disk layout of a sweep directory;
* :mod:`.stages`  the four stages, each reusing finished work and resuming interrupted work;
* :mod:`.runner`  the local runner (counters and an event log say what was run and what reused);
* :mod:`.slurm`   ``--dry_run`` plans, ``accelerate launch`` commands and SLURM array scripts;
* :mod:`.cli`     ``xtask-safety sweep``.
"""
