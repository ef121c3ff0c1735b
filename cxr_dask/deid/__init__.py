"""Per-file de-identification: headers (PS3.15 Annex E) and, later, pixels."""
