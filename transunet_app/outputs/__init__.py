"""Per-case output writers, and the staging that commits a case's outputs as one unit."""
