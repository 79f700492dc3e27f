"""Related items: canonical URLs, page metadata and bounded fetching of related pages."""
