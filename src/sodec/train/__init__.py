"""Training: the three-stage rate-annealing recipe (and nano's stage-0 prior) on accelerate."""
