"""gradinv: how much of each FL client's training images can be rebuilt from the weight updates it shares.

The attack core (:mod:`gradinv.attack`, :mod:`gradinv.recipe`, :mod:`gradinv.models`, :mod:`gradinv.metrics`)
is plain PyTorch; the NVFlare glue lives in :mod:`gradinv.fl` and :mod:`gradinv.privacy`.
"""

__version__ = "0.1.0"
