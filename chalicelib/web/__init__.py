"""The HTTP faces: request parameters, the contract's answers (JSON, redirects, pages, oEmbed, OpenAPI), links to
this service's own routes, and the middleware (errors, CORS, one log line per request).

May import ``clips``, ``ops``, ``stores``, ``audio`` and the kernel; nothing imports it but ``app.py``.
"""
