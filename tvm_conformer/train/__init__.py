"""Training of the Conformer-CTC with a CTC + attention-decoder multitask loss."""
