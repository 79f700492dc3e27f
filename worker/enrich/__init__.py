"""The enrich step: related pages fetched within bounds, their metadata, and changes spread along related links."""
