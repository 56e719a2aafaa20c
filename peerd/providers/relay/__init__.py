"""
The relay provider: lend bandwidth so that unreachable peers (behind NAT, or
with ``listen = none``) can still be reached through this peer.

Modelled on libp2p circuit relay v2: a peer first *reserves* a slot on the
relay, then others open *circuits* to it through the relay, each circuit
bounded in time and bytes.  Bandwidth is accounted Tor-style: a shared rate
across all circuits and an optional monthly allowance.

:mod:`.limits` holds the options and refusal codes; the transport-free
bookkeeping is :mod:`.reservations`, :mod:`.circuits` and :mod:`.shared_rate`;
:mod:`.accounting` persists the monthly usage (counted by
:class:`peerd.ratelimit.PeriodAllowance`).
"""
