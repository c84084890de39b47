"""Hands-on exercises: the student writes a function, ``mmlab.check`` runs and measures it.

One module per lab session holds that notebook's checks (``parameters`` for 01,
``alignment`` 02, ``lazy`` 03, ``readvsmmap`` 04, ``doubling`` 05, ``sharing`` 06, ``memory``
07, ``durability`` 08, ``practitioners`` 09, which re-exports ``batching``'s); each check runs
the student's code under the instruments beside this machine's own reference measurement and
returns a ``verdict.Verdict``. The notebooks reach them as ``check.<name>``
(``mmlab.course.check`` looks them up here).
"""

MODULES = (
    "parameters",
    "alignment",
    "lazy",
    "readvsmmap",
    "doubling",
    "sharing",
    "memory",
    "durability",
    "practitioners",
)
