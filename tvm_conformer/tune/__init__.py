"""Hardware-aware auto-tuning with MetaSchedule: tasks, tuner, tuning databases, report.

    tasks.py     the pipeline's fused kernels as tuning tasks, by group (depthwise, conv, ...)
    tuner.py     `tune`: XGBoost + evolutionary search, cross-compiling builder, local/RPC runner
    (the database format itself, `tuning_logs/<target>/` and its manifest, is
    `tvm_conformer.compiler.database`: `compile` reads it, `tune` writes it)
    report.py    per-kernel and whole-model latencies: untuned, schedules/ only, tuned
"""
