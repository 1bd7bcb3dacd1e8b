"""Training callbacks that run lrdiag's rules in process and can stop a run: `lrdiag.integrations.lightning`,
`lrdiag.integrations.transformers` (Hugging Face Trainer) and `lrdiag.integrations.keras`, each an
`LrdiagCallback`. Each module imports its framework, so import the one you use."""
