"""Model loading and inference helpers (torch/transformers imported lazily)."""
