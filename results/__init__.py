"""Collects finished runs' summary.json files and renders the papers' tables (arrives later)."""
