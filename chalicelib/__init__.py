"""All the service's logic; ``app.py`` only declares routes, events and the schedule.

Packages by what each owns, with imports running one way (``tests/test_layering.py`` enforces it):
``web`` (HTTP faces) -> ``clips`` (use cases) -> ``ops`` (operations), ``stores`` (S3, SSM, MongoDB) and ``audio`` (the
engine) -> the kernel at this level (``settings``, ``errors``, ``deadlines``). ``wiring`` builds the clients and may
import everything but ``web``.
"""
