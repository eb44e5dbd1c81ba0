"""The managers' web console, served by the service itself at ``/``."""

from console.web import mount_console

__all__ = ["mount_console"]
