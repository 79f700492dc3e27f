"""Imported only by the parser fork server (as a preload): it dies with the process it serves.

Without this, a `serve` killed with SIGKILL would leave its fork server, and the parser
processes waiting under it, running for good. Importing this module anywhere else would
tie that process to its parent, so nothing else imports it.
"""

from worker._parentdeath import die_with_parent

die_with_parent()
