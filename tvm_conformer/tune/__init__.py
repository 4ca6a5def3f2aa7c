"""Hardware-aware auto-tuning with MetaSchedule: tasks, tuner, tuning databases, report.

    tasks.py     the pipeline's fused kernels as tuning tasks, by group (depthwise, conv, ...)
    tuner.py     `tune`: XGBoost + evolutionary search, cross-compiling builder, local/RPC runner
    database.py  `tuning_logs/<target>/` with its manifest; `default_database` for `compile`
    report.py    per-kernel and whole-model latencies: untuned, schedules/ only, tuned
"""
