"""Training loops (distillation, episodic training) and what they share: runtime, checkpoints, order."""
