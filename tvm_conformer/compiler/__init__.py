"""Compile the imported step with the project's Relax pipeline into an artifact directory."""
