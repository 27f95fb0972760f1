"""The hosts of a PVM host file, and whether each one joined the virtual machine.

The daemon of its own that reads a host file adds its hosts once it is up, and says nothing of
one it could not add (a misspelt name, a host that ssh does not reach, this host's name bound
to the loopback address): the slaves would run on the other hosts without a word. So the
master asks PVM itself to add the hosts of the file that are not in the virtual machine yet,
which waits for those the daemon is still adding, and tells of each that PVM refused, with
PVM's reason.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from multi.pvm_binding import ERRORS

#: PVM's answers that mean a host is in the virtual machine already, or on its way there.
DUPLICATE_HOST, ALREADY_IN_PROGRESS = -28, -30

#: What to do about each of PVM's refusals, where there is more to say than its reason.
ADVICE = {
    -6: "check the name (it does not resolve here)",
    -22: "check that the host is up and reachable",
    -29: (
        "check that ssh (PVM_RSH=/usr/bin/ssh) or rsh reaches it without a password, and "
        "that PVM is installed there"
    ),
    -36: (
        "this host's name resolves to 127.0.0.1 or 127.0.1.1 (see /etc/hosts), so no other "
        "host can reach its daemon: bind the name to this host's network address"
    ),
}


def startup_hosts(text: str) -> list[str]:
    """The hosts that a host file's daemon adds as it starts: the first word of each line,
    but comments (``#``), default options (``*``) and hosts described for later (``&``)."""
    hosts = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0][0] not in "#*&":
            hosts.append(words[0])
    return hosts


def not_present(hosts: Sequence[str], present: Sequence[str]) -> list[str]:
    """The ``hosts`` that are none of the ``present`` ones, by name or by address (``vm``,
    ``vm.lab`` and ``localhost`` may all be this host)."""
    known = {name.lower() for name in present}
    addresses = set().union(*(_addresses(name) for name in present))
    return [
        host for host in hosts if host.lower() not in known and not (_addresses(host) & addresses)
    ]


def refusals(hosts: Sequence[str], codes: Sequence[int]) -> list[str]:
    """What to tell of each host that PVM did not add (``Pvm.add_hosts``'s codes)."""
    told = []
    for host, code in zip(hosts, codes, strict=True):
        if code >= 0 or code in (DUPLICATE_HOST, ALREADY_IN_PROGRESS):
            continue
        reason = f"{ERRORS.get(code, 'PVM error')} ({code})"
        advice = ADVICE.get(code)
        told.append(f"{host}: {reason}" + (f"; {advice}" if advice else ""))
    return told


def _addresses(name: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return set()
