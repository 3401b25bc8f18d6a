"""Training: classical and encoder classifiers, and the LoRA SFT recipe."""
