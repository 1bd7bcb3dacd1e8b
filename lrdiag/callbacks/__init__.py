"""The callbacks' former home: `lrdiag.callbacks.lightning`, `.hf` and `.keras` import `LrdiagCallback` from
`lrdiag.integrations` (its `lightning`, `transformers` and `keras` modules), so code written for them still works."""
