"""Bring-up: one description of what runs (profiles), read by the launch files and `halo-ros up`."""
