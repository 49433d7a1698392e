"""Training-ready token files (`output.tokenize`): formats, the tokenizer, the finalize steps."""
