"""The course: the notebooks' self-checks (``check``) and ``mmlab doctor``'s advice for
each lab (``doctor``, ``advice``)."""
