"""An HTTP client that can't be steered into the appliance's own network (SSRF).

Every hop is checked: the host name is resolved here, every address it resolves to must be public
(not loopback, private, link-local, shared, reserved, multicast or a cloud metadata endpoint) unless
the allow-list names the host or a range holding the address, and the request then goes to the
checked address itself (Host header and TLS SNI keep the name), so a second DNS answer can't swap
in another target. Redirects are followed here, hop by hop, through the same check. Bodies are
read as a stream and cut off at a size and a wall-clock limit.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx

from appliance.domain import ApplianceError

# Addresses that answer with credentials on common clouds; refused even if a range holding them
# is allowed, unless the exact address is named.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task credentials
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
    }
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not public


class FetchRefused(ApplianceError):
    """A URL the connector may not fetch (address class, scheme, domain, robots.txt)."""

    status, code = 400, "fetch_refused"


class FetchFailed(ApplianceError):
    """The server could not be reached or answered with an error, or a cap was hit."""

    status, code = 502, "fetch_failed"


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not a public one, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


@dataclass(frozen=True)
class AllowList:
    """Hosts and ranges that may be reached even though they are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(nets))

    def permits(self, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        if ip in METADATA_ADDRESSES:
            return any(net.num_addresses == 1 and ip in net for net in self.networks)
        return any(ip in net for net in self.networks)


Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class Response:
    url: str  # after redirects
    status: int
    headers: httpx.Headers
    body: bytes
    redirects: list[str] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_of(text: str) -> IP:
    """An address without its IPv6 zone; an IPv4-mapped IPv6 address as the IPv4 one."""
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def checked_addresses(
    host: str, port: int, *, label: str, allow: AllowList, resolver: Resolver, allow_setting: str
) -> list[IP]:
    """Every address ``host`` resolves to (once), after each passed the address rules; the caller
    connects to one of these, never to a second DNS answer. Refusals name the host as given, not
    the address it resolved to: a refusal must not become a way to map the inside network."""
    host = host.strip("[]")
    try:
        addresses = [str(ip_of(host))]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except PermissionError as exc:  # the process's egress guard (appliance.egress)
            raise FetchRefused(
                f"refused {label}: outbound connections to {host} are blocked; add it to "
                "egress.allow (APPLIANCE_EGRESS__ALLOW)"
            ) from exc
        except OSError as exc:
            raise FetchFailed(f"cannot resolve {host}") from exc
    if not addresses:
        raise FetchFailed(f"cannot resolve {host}")
    checked = [ip_of(a) for a in addresses]
    for ip in checked:
        problem = address_problem(ip)
        if problem and not allow.permits(host, ip):
            resolved = "is" if str(ip) == host else "resolves to"
            raise FetchRefused(
                f"refused {label}: {host} {resolved} {problem}; an admin may name it in {allow_setting} to allow it"
            )
    return checked


class SafeClient:
    """GET with SSRF checks on every hop, a size cap and a wall-clock cap per response."""

    def __init__(
        self,
        allow: AllowList,
        max_bytes: int,
        timeout_s: float,
        user_agent: str,
        max_redirects: int = 5,
        resolver: Resolver = system_resolver,
        limit_setting: str = "connectors.web.max_bytes",
    ) -> None:
        self.allow = allow
        self.max_bytes = max_bytes
        self.limit_setting = limit_setting  # named in the message when a response is over the cap
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.resolver = resolver
        # trust_env off: a proxy from the environment would be a way around the address checks.
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": user_agent},
        )

    def close(self) -> None:
        self.client.close()

    def check(self, url: str) -> tuple[httpx.URL, str]:
        """The URL to send (host replaced by a checked address) and the checked address."""
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https"):
            raise FetchRefused(f"refused {url}: only http and https URLs are fetched")
        host = parsed.host
        if not host:
            raise FetchRefused(f"refused {url}: no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = checked_addresses(
            host,
            port,
            label=url,
            allow=self.allow,
            resolver=self.resolver,
            allow_setting="connectors.web.allow_private",
        )
        return parsed.copy_with(host=str(addresses[0])), host

    def get(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        hop_check: Callable[[str], None] | None = None,
    ) -> Response:
        """``hop_check(url)`` runs before every hop and raises to refuse it (e.g. off-site)."""
        redirects: list[str] = []
        current = url
        for _ in range(self.max_redirects + 1):
            target, host = self.check(current)  # first: the address refusal is the one that matters
            if hop_check is not None:
                hop_check(current)
            parsed = httpx.URL(current)
            host_header = f"[{host}]" if ":" in host else host
            if parsed.port is not None:
                host_header += f":{parsed.port}"
            request = self.client.build_request(
                method,
                target,
                headers={**(headers or {}), "Host": host_header},
                extensions={"sni_hostname": host} if parsed.scheme == "https" else {},
            )
            status, resp_headers, body = self._send(request, current)
            if status in (301, 302, 303, 307, 308) and "location" in resp_headers:
                redirects.append(current)
                current = urljoin(current, resp_headers["location"])
                continue
            return Response(current, status, resp_headers, body, redirects)
        raise FetchFailed(f"{url}: more than {self.max_redirects} redirects")

    def _send(self, request: httpx.Request, url: str) -> tuple[int, httpx.Headers, bytes]:
        deadline = time.monotonic() + self.timeout_s
        try:
            response = self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise FetchFailed(f"{url}: no answer within {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from exc
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise FetchFailed(
                    f"{url}: {int(declared)} bytes declared, over the {self.max_bytes}-byte limit "
                    f"({self.limit_setting})"
                )
            if request.method == "HEAD":
                return response.status_code, response.headers, b""
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchFailed(
                        f"{url}: response over the {self.max_bytes}-byte limit ({self.limit_setting})"
                    )
                if time.monotonic() > deadline:
                    raise FetchFailed(
                        f"{url}: response took over {self.timeout_s:g} s (connectors.web.timeout_s)"
                    )
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise FetchFailed(f"{url}: no data within {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            response.close()
