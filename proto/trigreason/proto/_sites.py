"""The bus vocabulary between sites (docs/sites.md): an edge site is a NATS leaf node with its own JetStream
domain (the site's name), the cloud hub has the domain ``cloud``.

One LRM step crosses the WAN once each way: the edge keeps its LRM commands in ``TRIG_LRM_OUT``; the cloud's
work queue ``TRIG_LRM_CMD`` sources every edge's outbox through ``$JS.<site>.API`` (the edge pushes each
command across the leaf, delivered under ``trig.site.<site>.src``), filing ``trig.cmd.lrm`` as
``trig.site.<site>.cmd.lrm``; a cloud worker answers on ``trig.site.<site>.evt.<session>.<kind>``, which the
edge's event stream files as ``trig.evt.<session>.<kind>``."""

from __future__ import annotations

import re
from typing import Final

from ._permissions import js_api
from ._subjects import _ROOT, command_subject

__all__ = [
    "CLOUD_DOMAIN",
    "CLOUD_FALLBACK_TRIGGER",
    "FLOW_CONTROL_SUBJECTS",
    "LRM_COMMAND_STREAM",
    "LRM_OUTBOX_STREAM",
    "site_commands",
    "site_deliver_prefix",
    "site_events",
    "site_js_api",
    "site_of_subject",
    "site_ping",
    "site_subject",
]

CLOUD_DOMAIN: Final = "cloud"
# The trigger of a step the SRM wrote because the cloud did not answer (on_cloud_unavailable=srm).
CLOUD_FALLBACK_TRIGGER: Final = "cloud_unavailable"
# At the edge: the LRM commands, kept until they age out (limits), whatever the WAN does meanwhile.
LRM_OUTBOX_STREAM: Final = "TRIG_LRM_OUT"
# In the cloud: every site's LRM commands, one work queue for the LRM worker pool.
LRM_COMMAND_STREAM: Final = "TRIG_LRM_CMD"
# JetStream's flow-control replies of a source's push consumer (the cloud answers the edge's consumer).
FLOW_CONTROL_SUBJECTS: Final = "$JS.FC.>"

_SITE_SUBJECT: Final = re.compile(rf"^{_ROOT}\.site\.([A-Za-z0-9_-]+)\.(.+)$")


def _site_root(site: str) -> str:
    return f"{_ROOT}.site.{site}"


def site_subject(site: str, subject: str) -> str:
    """A subject of the layout as another site sees it: ``trig.evt.s1.lrm_step`` for site ``a`` is
    ``trig.site.a.evt.s1.lrm_step``."""
    return f"{_site_root(site)}.{subject.removeprefix(_ROOT + '.')}"


def site_of_subject(subject: str) -> tuple[str, str] | None:
    """``trig.site.<site>.<rest>`` -> (site, ``trig.<rest>``); None for a subject of one site."""
    match = _SITE_SUBJECT.match(subject)
    return (match.group(1), f"{_ROOT}.{match.group(2)}") if match else None


def site_events(site: str) -> str:
    """Every event the cloud sends to ``site`` (``"*"``: to any site)."""
    return f"{_site_root(site)}.evt.>"


def site_commands(site: str) -> str:
    """The LRM commands of ``site`` in the cloud's queue (``"*"``: of every site)."""
    return site_subject(site, command_subject("lrm"))


def site_deliver_prefix(site: str) -> str:
    """Where the edge's source consumer delivers the LRM commands to the cloud."""
    return f"{_site_root(site)}.src"


def site_ping(site: str) -> str:
    """Where an edge asks whether the cloud answers (an LRM worker replies; ``"*"``: every site's)."""
    return f"{_site_root(site)}.ping"


def site_js_api(site: str) -> str:
    """The JetStream API of a domain (an edge's: its site name; the hub's: ``cloud``)."""
    return js_api(site)
