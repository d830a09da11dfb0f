"""Evaluation: perceptual metrics that run offline (weights converted once to safetensors)."""
