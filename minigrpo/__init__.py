"""minigrpo: GRPO with a semantic reward model, from scratch in PyTorch."""

__version__ = "0.1.0"
