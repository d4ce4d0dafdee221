"""Arsonor Assistant: answers home-studio audio questions from the blog's articles."""

import os

# numpy's OpenBLAS threads keep spinning after each product and fight the query embedder's
# OpenMP threads for the cores, slowing every query embedding 1.5-2x on a 2-core machine. Our
# products are matrix-vector, which one thread does in a few milliseconds. (Set before numpy
# is imported; an explicit OPENBLAS_NUM_THREADS wins.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
