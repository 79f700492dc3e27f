"""Imported only by the parser fork server (as a preload): it dies with the process it serves.

Without this, a `serve` killed with SIGKILL would leave its fork server, and the parser
processes waiting under it, running for good. Importing this module anywhere else would
tie that process to its parent, so nothing else imports it.

Every process the fork server forks is tied to it in the same way from its first
instruction on, before it reads a byte from `serve`: a parser process that first did so in
its pool initializer could find the server already gone (`serve` exiting as its pool
started), be tied to init instead, and wait for work for good, holding the resource
tracker's pipe open so that the tracker stayed too.
"""

import os

from worker._parentdeath import die_with_parent

SERVER_PID = os.getpid()  # in a parser process too: it is a fork of the server
_forker = SERVER_PID  # the process forking right now (set in it, read in the child)


def _note_forker() -> None:
    global _forker
    _forker = os.getpid()


def _tie_to_forker() -> None:
    die_with_parent(_forker)  # exits at once if the forker is already gone


die_with_parent()
os.register_at_fork(before=_note_forker, after_in_child=_tie_to_forker)
