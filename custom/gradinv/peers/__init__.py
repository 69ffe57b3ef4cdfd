"""Peer attacks run beside gradinv's on the same client updates (``bench/peers.py``); optional, never core.

* :mod:`gradinv.peers.breaching_peer`: breaching's optimisation-based attack (needs the ``peers`` extra).
* :mod:`gradinv.peers.paper_released`: the paper's released attack objective as it actually ran.

The core (``gradinv.attack`` and below) never imports this package.
"""

from gradinv.peers.common import PeerResult

__all__ = ["PeerResult"]
