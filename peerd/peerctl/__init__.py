"""
``peerctl``: a thin client of the control API.

:mod:`.client` talks to the daemon, :mod:`.output` renders answers,
:mod:`.command` is the base of every subcommand, :mod:`.core` holds the core
commands and :mod:`.main` joins them with each provider's ``cli`` module.
"""
