"""Planner: scaling laws, model shapes, FLOPs, memory, cluster search, costs, energy and failures."""
