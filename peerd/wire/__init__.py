"""
The peerd wire protocol, sans-IO: bytes <-> frames <-> session events.

Nothing in this package touches a socket, a reactor or a clock.
"""
