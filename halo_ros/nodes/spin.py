"""The one `main()` shape every halo_ros node uses."""

import signal
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_node(make_node: Callable[[], Node], args=None, *, threads: int = 1) -> None:
    """Init rclpy, build the node, spin until Ctrl-C / SIGTERM / shutdown, then clean up.

    The order matters for nodes that publish from their own threads (sim, controller): rclpy's
    signal handler would invalidate the context while those threads still publish, so we handle
    SIGINT/SIGTERM ourselves, destroy the node (which stops its threads) and only then shut down.
    `threads` > 1 uses a MultiThreadedExecutor (services that call services, long callbacks).
    While spinning a signal only sets a flag: an exception raised from the handler inside
    rclpy's C++ (taking a message) comes out as pybind11's "Unable to convert call argument"
    RuntimeError and the node exits 1 on a clean stop.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, _interrupt)
    executor = MultiThreadedExecutor(threads) if threads > 1 else SingleThreadedExecutor()
    node = None
    try:
        node = make_node()
        executor.add_node(node)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        while rclpy.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=0.1)  # short, so a signal is seen within 0.1 s
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
