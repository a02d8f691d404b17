"""The nats-server configurations of the edge-cloud topology (docs/sites.md), and throw-away TLS material.

Pure text from typed inputs, so tests and the Helm values can read the same shapes:

* the **hub** (cloud): JetStream domain ``cloud``; client port and leaf node port with TLS that verifies the
  peer's certificate (mutual TLS); one account per edge site (``SITE_<site>``, what that site's leaf
  connection binds to) and a ``CLOUD`` account for the LRM workers. A site's account exports to ``CLOUD``
  only what the LRM path needs (its JetStream API, for the source; the source's deliveries; its result
  subjects) and nothing to any other site, so one site cannot see another's sessions;
* an **edge**: JetStream domain = the site's name; TLS that verifies clients; one account (``SITE``) with
  the site's users; a leaf remote to the hub over mutual TLS, bound to ``SITE``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

from trigreason.proto import (
    CLOUD_DOMAIN,
    EVENT_STREAM,
    FLOW_CONTROL_SUBJECTS,
    KV_STREAM,
    LRM_OUTBOX_STREAM,
    BusService,
    event_filter,
    js_api,
    service_permissions,
    site_deliver_prefix,
    site_events,
    site_js_api,
    site_ping,
)

__all__ = [
    "CLOUD_DOMAIN",
    "EdgeServer",
    "HubServer",
    "TlsFiles",
    "TlsMaterial",
    "edge_config",
    "edge_service_permissions",
    "hub_config",
]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """One party's certificate and key, and the CA that verifies its peers."""

    ca: Path
    cert: Path
    key: Path


class TlsMaterial:
    """A throw-away CA (``trustme``) and a certificate per name, written under ``directory``. Each
    certificate is valid for 127.0.0.1 and localhost, as a server and as a client."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name="TrigReason throw-away CA")
        self.ca = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca))

    def issue(self, name: str) -> TlsFiles:
        cert = self._ca.issue_cert("127.0.0.1", "localhost", f"{name}.trigreason.local")
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        cert.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
        return TlsFiles(ca=self.ca, cert=cert_path, key=key_path)


def _q(text: str) -> str:
    """A quoted string in nats-server's configuration syntax (JSON strings are valid there)."""
    return json.dumps(text)


def _tls_block(tls: TlsFiles, *, verify: bool, handshake_first: bool) -> str:
    return (
        f"{{ cert_file: {_q(str(tls.cert))}, key_file: {_q(str(tls.key))}, ca_file: {_q(str(tls.ca))}, "
        f"verify: {str(verify).lower()}, handshake_first: {str(handshake_first).lower()}, timeout: 5 }}"
    )


def _users(users: Mapping[str, str], permissions: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Users and passwords; a user in ``permissions`` gets that NATS ``permissions`` block."""
    out = []
    for user, password in users.items():
        perms = (permissions or {}).get(user)
        extra = f", permissions: {json.dumps(perms)}" if perms is not None else ""
        out.append(f"{{user: {_q(user)}, password: {_q(password)}{extra}}}")
    return ", ".join(out)


def edge_service_permissions(service: BusService, site: str) -> dict[str, Any]:
    """An edge service's NATS permissions: the generator's (``service_permissions``) and what the edge
    placement adds: the LRM outbox in the layout, and for the orchestrator the cloud's ping, its notices (a
    failed step, the SRM's turn) and the sessions' snapshots it looks through when the cloud goes away.
    Both API prefixes: the client names its domain (``$JS.<site>.API``), which the server maps to its
    local ``$JS.API`` before it checks the permission."""
    allow: list[str] = []
    for api in (js_api(site), js_api()):
        allow += service_permissions(service, api=api)["publish"]["allow"]
        allow += [f"{api}.STREAM.CREATE.{LRM_OUTBOX_STREAM}", f"{api}.STREAM.UPDATE.{LRM_OUTBOX_STREAM}"]
        if service == "gateway":
            # its ordered consumers (SSE replay) ask for their own info when they resume after a restart
            allow += [f"{api}.CONSUMER.INFO.{EVENT_STREAM}.>"]
        if service == "orchestrator":
            allow += [
                f"{api}.STREAM.NAMES",
                f"{api}.STREAM.INFO.{KV_STREAM}",
                f"{api}.CONSUMER.CREATE.{KV_STREAM}",
                f"{api}.CONSUMER.CREATE.{KV_STREAM}.>",
                f"{api}.CONSUMER.DELETE.{KV_STREAM}.>",
                f"{api}.CONSUMER.INFO.{KV_STREAM}.>",
            ]
    if service == "orchestrator":
        allow += [
            site_ping(site),
            event_filter("step_failed"),
            event_filter("cloud_unavailable"),
            FLOW_CONTROL_SUBJECTS,  # the snapshot scan's flow-control replies
        ]
    perms = service_permissions(service)
    perms["publish"]["allow"] = list(dict.fromkeys(allow))
    return perms


@dataclass(frozen=True, kw_only=True, slots=True)
class HubServer:
    port: int
    leaf_port: int
    store_dir: Path
    tls: TlsFiles
    cloud_users: Mapping[str, str]  # the LRM workers' user(s) and passwords
    leaf_users: Mapping[str, str]  # site -> the password of that site's leaf connection (user leaf-<site>)
    handshake_first: bool = True
    host: str = "127.0.0.1"


@dataclass(frozen=True, kw_only=True, slots=True)
class EdgeServer:
    site: str
    port: int
    store_dir: Path
    tls: TlsFiles
    users: Mapping[str, str]  # the site's users (its services, a harness) and their passwords
    # Per user, a NATS permissions block (``edge_service_permissions``); a user without one may do anything.
    permissions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    hub_leaf_url: str  # where the leaf connection dials (the hub's leaf port, or a WAN in between)
    leaf_password: str
    handshake_first: bool = True
    host: str = "127.0.0.1"


def _site_exports(site: str) -> Sequence[str]:
    # What the cloud may reach of a site: its JetStream API (the hub's source creates its consumer there),
    # the source's deliveries, and the subjects its results arrive on. Nothing for other sites.
    return (
        f"{{service: {_q(site_js_api(site) + '.>')}, accounts: [CLOUD]}}",
        f"{{stream: {_q(site_deliver_prefix(site) + '.>')}, accounts: [CLOUD]}}",
        f"{{service: {_q(site_events(site))}, accounts: [CLOUD]}}",
    )


def _cloud_imports(site: str) -> Sequence[str]:
    account = f"SITE_{site}"
    return (
        f"{{service: {{account: {account}, subject: {_q(site_js_api(site) + '.>')}}}}}",
        f"{{stream: {{account: {account}, subject: {_q(site_deliver_prefix(site) + '.>')}}}}}",
        f"{{service: {{account: {account}, subject: {_q(site_events(site))}}}}}",
    )


def hub_config(hub: HubServer) -> str:
    sites = sorted(hub.leaf_users)
    site_accounts = "\n".join(
        f"  SITE_{site}: {{\n"
        f"    users: [{{user: {_q(f'leaf-{site}')}, password: {_q(hub.leaf_users[site])}}}]\n"
        f"    exports: [{', '.join(_site_exports(site))}]\n"
        # The source's flow-control replies come from the cloud's stream.
        f"    imports: [{{stream: {{account: CLOUD, subject: {_q(FLOW_CONTROL_SUBJECTS)}}}}}, "
        f"{{service: {{account: CLOUD, subject: {_q(site_ping(site))}}}}}]\n"
        f"  }}"
        for site in sites
    )
    imports = ", ".join(i for site in sites for i in _cloud_imports(site))
    # Each site may ask whether the cloud answers (an LRM worker replies), on its own subject only.
    exports = ", ".join(
        [f"{{stream: {_q(FLOW_CONTROL_SUBJECTS)}}}"]
        + [f"{{service: {_q(site_ping(site))}, accounts: [SITE_{site}]}}" for site in sites]
    )
    return f"""# The cloud hub (generated by trigreason; docs/sites.md)
server_name: "hub"
listen: "{hub.host}:{hub.port}"
tls {_tls_block(hub.tls, verify=True, handshake_first=hub.handshake_first)}
jetstream {{ domain: {_q(CLOUD_DOMAIN)}, store_dir: {_q(str(hub.store_dir))} }}
leafnodes {{
  listen: "{hub.host}:{hub.leaf_port}"
  tls {_tls_block(hub.tls, verify=True, handshake_first=hub.handshake_first)}
}}
accounts {{
  CLOUD: {{
    jetstream: enabled
    users: [{_users(hub.cloud_users)}]
    exports: [{exports}]
    imports: [{imports}]
  }}
{site_accounts}
}}
"""


def edge_config(edge: EdgeServer) -> str:
    scheme, _, rest = edge.hub_leaf_url.partition("://")
    url = f"{scheme}://leaf-{edge.site}:{edge.leaf_password}@{rest}"
    return f"""# Edge site {edge.site} (generated by trigreason; docs/sites.md)
server_name: {_q(f"edge-{edge.site}")}
listen: "{edge.host}:{edge.port}"
tls {_tls_block(edge.tls, verify=True, handshake_first=edge.handshake_first)}
jetstream {{ domain: {_q(edge.site)}, store_dir: {_q(str(edge.store_dir))} }}
accounts {{
  SITE: {{ jetstream: enabled, users: [{_users(edge.users, edge.permissions)}] }}
}}
leafnodes {{
  reconnect: "1s"
  remotes: [{{
    urls: [{_q(url)}]
    account: SITE
    tls {_tls_block(edge.tls, verify=False, handshake_first=edge.handshake_first)}
  }}]
}}
"""
