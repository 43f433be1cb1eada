"""Operations: the scheduled health check (MongoDB ping, Atlas diagnosis, alerts), structured logs, metrics and
tracing.

May import only the kernel and itself.
"""
