"""Taming Transformers' VQGAN (CompVis taming-transformers): ``VQModel``, ``EMAVQ`` and their loss.

State-dict keys are upstream's, so official releases load unchanged
(``checkpoint_loading.load_upstream_weights``).
"""
