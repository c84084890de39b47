"""Data: QM9 offline (``qm9``), a PyTorch dataset over a store (``dataset``), and the blog
example's own file layout (``seedformat``)."""
