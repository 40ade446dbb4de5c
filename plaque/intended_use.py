"""What every trained model of this repository is for, and the caveat of one trained on the phantom: the model
cards of the methods (`plaque.eval.cards`) and of the vessel model (`plaque.train.vessel`) quote them."""

from __future__ import annotations

INTENDED_USE = (
    "Research only: reproducing and extending the paper's experiments on coronary CT angiography. Not a "
    "medical device, not validated on patients: never use it for diagnosis, treatment or any clinical decision."
)
PHANTOM_CAVEAT = (
    "Trained on the built-in synthetic phantom: it has never seen a real scan, and its figures say nothing about "
    "real patients. Train on your own labelled cohort (README, Your own data) before segmenting real scans."
)
