"""Dependency-free helpers shared by every component: errors and exit codes, number parsing,
atomic file writes and report formatting. Nothing here imports a heavy library."""
