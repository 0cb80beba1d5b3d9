"""The table registry and the drivers behind `make reproduce-*` (arrives with the table configs)."""
