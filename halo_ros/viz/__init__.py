"""Seeing what happened: the episode report (HTML), run summaries, benchmark plots, live view.

ROS-free except `halo-ros view`, whose graph side is `halo_ros.nodes.foxglove_bridge`.
Plots use matplotlib (the `viz` extra).
"""
