"""plaque: multi-class coronary plaque segmentation with contrastive VQ priors and SAM adaptation."""

__version__ = "0.1.0"
