"""halo_ros: run the HALO vision-language-action model on a Mobile ALOHA through ROS 2."""

__version__ = '0.1.0'
