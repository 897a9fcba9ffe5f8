"""vitpeft: fine-tune a self-supervised ViT and measure what it forgets."""

__version__ = "0.1.0"
