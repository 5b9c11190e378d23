"""DARTS search in PyTorch: primitives, the supernet, the bilevel step and the search loop.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
"""
