"""Training callbacks that run lrdiag's rules in process and can stop a run: `lrdiag.callbacks.lightning`,
`lrdiag.callbacks.hf` (Hugging Face Trainer) and `lrdiag.callbacks.keras`, each an `LrdiagCallback`. Each
module imports its framework, so import the one you use."""
