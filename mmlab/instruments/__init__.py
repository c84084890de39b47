"""Instruments: what a piece of code costs the machine, measured, never guessed.

- ``measure``, ``proc``, ``sampler``: time, faults, storage bytes, memory by kind, over time;
- ``pagecache``, ``visibility``, ``cachestat``: which pages of a file the kernel caches;
- ``bench``, ``compare``, ``stats``, ``sweep``, ``access``: interleaved comparisons;
- ``machine``, ``sysinfo``, ``fsinfo``, ``facts``, ``probe``: the facts of this machine;
- ``align``, ``live``: page alignment helpers and live plots.

None of them imports the record store or QM9.
"""
