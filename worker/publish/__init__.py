"""Publish: render stored articles into RSS, Atom and OPML files, written atomically."""
