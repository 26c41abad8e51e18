"""PyTorch backend: models, checkpoint, loop."""
