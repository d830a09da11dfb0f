"""sodec: an open implementation of SODEC, a one-step-diffusion learned image codec for ultra-low bitrates."""

__version__ = "0.1.0"
