"""Registry client transport rules that need no registry: where plain HTTP may go."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.oci._auth import is_loopback_host
from pipeline.oci.client import RegistryClient


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "[::1]", "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        # *.localhost is only loopback where the resolver says so (glibc without
        # nss-myhostname asks DNS): plain HTTP and credentials could leave the machine.
        "registry.localhost",
        "evil.localhost",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "0.0.0.0",
        "10.0.0.1",
    ],
)
def test_names_that_may_resolve_elsewhere_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)
    with pytest.raises(ConfigError, match="loopback"):
        RegistryClient(f"{host}:5000", insecure=True)
