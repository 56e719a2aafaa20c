"""
The control API: HTTP+JSON under ``/api/v1/`` on a local socket.

:mod:`peerd.control.router` maps requests to handlers, :mod:`peerd.control.api`
holds the core routes and :mod:`peerd.control.server` serves them.
"""
