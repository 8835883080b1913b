"""How records become bytes: `raw` (the envelope as `records` writes it) or `points`."""
