"""patchkit: make upstream time-series model repos torch.compile-clean, and prove it."""

__version__ = "0.1.0"
