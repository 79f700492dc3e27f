"""Tests resolve no name outside the machine: a fake resolver, and a suite-wide guard.

`FakeNames` replaces the lookups of the `socket` module (asyncio, httpx and the fetcher all
go through `socket.getaddrinfo`). Addresses (`127.0.0.1`, `::1`, `2130706433`) and
`localhost` go to the system resolver, which answers them without the network; a name a
test gave an answer for gets that answer (addresses, a failure, or no answer at all); any
other name fails as an unknown name would, and is recorded. Reverse lookups are answered
here: loopback addresses are `localhost`, others have no name (http.server asks for the
name of the address it binds; a PTR query for 127.0.0.2 would otherwise leave the machine).

* As a plugin (`pytest_plugins = ["tests.nodns"]` in tests/conftest.py, or
  `pytest -p tests.nodns`): every test runs under it, and a test that looked up an outside
  name fails at its teardown, naming it.
* `fake_names()`: the same for one block, and the answers a test needs (see `FakeNames`).
* `python -m tests.nodns [--fail NAME] [--hang NAME] [--answer NAME=ADDR,...] ARGS...`:
  `feedworker ARGS` in a process of its own under the fake (for a test that runs the real
  command line); exits 86 if it looked up an outside name.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["FakeNames", "fake_names", "no_outside_name_lookups"]

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
OUTSIDE_EXIT = 86
_FUNCTIONS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


class FakeNames:
    """A resolver for tests: real answers for addresses and localhost only, given ones otherwise."""

    def __init__(self) -> None:
        self.outside: list[str] = []  # outside names looked up, in order
        self._answers: dict[str, Callable[[], list[str]]] = {}
        self._release = threading.Event()  # ends the lookups that never answer
        self._real: dict[str, Any] = {}

    # --- what a test declares

    def answer(self, name: str, *addresses: str) -> None:
        """`name` resolves to these addresses, in this order."""
        self._answers[_key(name)] = lambda: list(addresses)

    def fail(self, name: str, code: int = socket.EAI_NONAME) -> None:
        """Looking `name` up fails at once (by default as a name that does not exist)."""

        def failing() -> list[str]:
            raise socket.gaierror(code, f"{name}: no such name (tests/nodns.py)")

        self._answers[_key(name)] = failing

    def hang(self, name: str) -> None:
        """Looking `name` up never answers (a resolver that gets no reply), until the test ends."""

        def hanging() -> list[str]:
            self._release.wait()
            raise socket.gaierror(socket.EAI_AGAIN, f"{name}: no answer (tests/nodns.py)")

        self._answers[_key(name)] = hanging

    def forget_answers(self) -> None:
        """Forget the answers given; end the lookups left hanging."""
        self._answers.clear()
        self._release.set()
        self._release = threading.Event()

    def reset(self) -> None:
        """Forget the answers and what was looked up."""
        self.forget_answers()
        self.outside.clear()

    # --- installing

    @staticmethod
    def current() -> FakeNames | None:
        installed = getattr(socket.getaddrinfo, "__self__", None)
        return installed if isinstance(installed, FakeNames) else None

    def install(self) -> None:
        for name in _FUNCTIONS:
            self._real[name] = getattr(socket, name)
            setattr(socket, name, getattr(self, name))

    def uninstall(self) -> None:
        for name, function in self._real.items():
            setattr(socket, name, function)
        self._real.clear()
        self._release.set()

    # --- the socket module's lookups

    def getaddrinfo(
        self, host: str | bytes | None, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        real = self._real["getaddrinfo"]
        if not host:  # None: this machine's own addresses
            return real(host, port, family, type, proto, flags)
        name = host.decode("idna") if isinstance(host, bytes) else host
        try:  # an address in any form the C library reads (2130706433 too): no lookup at all
            return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        if _key(name) in LOCAL_NAMES:
            return real(host, port, family, type, proto, flags)
        addresses = self._resolve(name)
        results = []
        for address in addresses:
            results.extend(real(address, port, family, type, proto, flags | socket.AI_NUMERICHOST))
        return results

    def gethostbyname(self, name: str) -> str:
        return self.gethostbyname_ex(name)[2][0]

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        if _address(name) is not None or _key(name) in LOCAL_NAMES:
            return self._real["gethostbyname_ex"](name)
        addresses = [address for address in self._resolve(name) if ":" not in address]
        if not addresses:
            raise socket.gaierror(socket.EAI_NODATA, f"{name}: no IPv4 address (tests/nodns.py)")
        return name, [], addresses

    def gethostbyaddr(self, target: str) -> tuple[str, list[str], list[str]]:
        address = _address(target)
        if address is None:  # a name: its addresses, then no reverse lookup
            if _key(target) in LOCAL_NAMES:
                return "localhost", [], ["127.0.0.1"]
            return target, [], self._resolve(target)
        if address.is_loopback:
            return "localhost", [], [target]
        raise socket.herror(1, f"{target}: no name (tests/nodns.py)")

    def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        return self._real["getnameinfo"](sockaddr, flags | socket.NI_NUMERICHOST)

    def _resolve(self, name: str) -> list[str]:
        given = self._answers.get(_key(name))
        if given is None:
            self.outside.append(name)
            raise socket.gaierror(
                socket.EAI_NONAME, f"{name}: tests resolve no name outside the machine (tests/nodns.py)"
            )
        return given()


def _key(name: str) -> str:
    return name.lower().rstrip(".")


@contextmanager
def fake_names() -> Iterator[FakeNames]:
    """The fake resolver for this block: the suite's if the plugin is on, else one of its own
    (and then an outside name looked up in the block fails the test at its end)."""
    names = FakeNames.current()
    if names is not None:
        try:
            yield names
        finally:
            names.forget_answers()  # what was looked up is the suite guard's to judge
        return
    names = FakeNames()
    names.install()
    try:
        yield names
    finally:
        names.uninstall()
    if names.outside:
        pytest.fail(f"looked up {sorted(set(names.outside))}: tests resolve no name outside the machine", pytrace=False)


@pytest.fixture(scope="session")
def _suite_names() -> Iterator[FakeNames]:
    # Session scope: up before any module-scoped fixture (a module's local HTTP server).
    with fake_names() as names:
        yield names


@pytest.fixture(autouse=True)
def no_outside_name_lookups(_suite_names: FakeNames) -> Iterator[FakeNames]:
    """Every test: a lookup of a name outside the machine fails, and fails the test."""
    _suite_names.reset()
    yield _suite_names
    outside = list(_suite_names.outside)
    _suite_names.reset()
    if outside:
        pytest.fail(
            f"the test looked up {sorted(set(outside))}: tests resolve no name outside the machine; "
            "give the answer it needs with tests.nodns.fake_names()",
            pytrace=False,
        )


def main(argv: Sequence[str]) -> None:
    """`feedworker ARGS` under the fake resolver, with the answers given before ARGS."""
    names = FakeNames()
    args = list(argv)
    while args and args[0] in ("--fail", "--hang", "--answer"):
        option, value = args.pop(0), args.pop(0)
        if option == "--fail":
            names.fail(value)
        elif option == "--hang":
            names.hang(value)
        else:
            name, _, addresses = value.partition("=")
            names.answer(name, *addresses.split(","))
    names.install()
    from worker.cli import cli

    try:
        cli.main(args, prog_name="feedworker")
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if names.outside:
        print(f"tests/nodns.py: outside names looked up: {sorted(set(names.outside))}", file=sys.stderr)
        code = OUTSIDE_EXIT
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
