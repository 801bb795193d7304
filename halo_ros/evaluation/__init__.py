"""Closed-loop evaluation of a policy on the simulator (`halo-ros eval`)."""
