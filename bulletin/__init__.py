"""bulletin: send a Borough Commander's key messages and track every copy."""

__version__ = "0.1.0"
