"""Related items: canonical URLs, page metadata and bounded fetching of related pages."""

__all__ = ["ENRICH_COUNTS"]

# The run report's `enrich` counts, which the enrich step fills in.
ENRICH_COUNTS = ("fetched", "not_modified", "failed", "refused", "pending")
