"""Data: the clip store, the synthetic generator, sampling/augmentation and loaders."""
