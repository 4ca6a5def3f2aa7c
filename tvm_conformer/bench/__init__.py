"""Benchmarks a compiler engineer can check: host latency of every engine on the same chunks,
full-utterance mode, scaling, roofline, MACs by component and a per-kernel profile.

Nothing is imported here: worker processes import `bench.worker` without torch.
"""
