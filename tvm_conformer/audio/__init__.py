"""Audio input and log-mel filterbank features (one code path for training and inference)."""
