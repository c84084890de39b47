"""Freeze the fork server's heap: the last module a fork server preloads.

A fork server (``multiprocessing`` start method ``"forkserver"``) imports the modules given to
``set_forkserver_preload`` once, then forks every worker from itself, so each worker inherits
the server's objects copy-on-write. A worker that allocates many objects runs Python's cyclic
collector, which writes the header of every object it tracks, inherited ones included, and so
copies their pages. Importing this module calls ``gc.freeze()``: every object alive then
(the earlier preloads: list it last) leaves the collector's lists, so no collection writes
them. Reference-count writes still copy the pages of objects a worker touches.
``gc.get_freeze_count()`` in a worker says whether it happened.
"""

import gc

__all__: list[str] = []

gc.freeze()
