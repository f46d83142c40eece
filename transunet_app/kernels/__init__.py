"""Native CPU kernels where torch's own are measurably slower (each with a torch fallback).

* :mod:`.attention`: bf16 ``softmax(q k^T s) v`` with AVX512-BF16 (C, compiled on first use).
"""
