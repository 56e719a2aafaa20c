"""The ``twistd peerd`` plugin: a ServiceMaker naming :mod:`peerd.tap`."""

from twisted.application.service import ServiceMaker

peerd = ServiceMaker(
    "peerd",
    "peerd.tap",
    "A peer of the peerd peer-to-peer network (mutual TLS, pluggable resource providers).",
    "peerd",
)
