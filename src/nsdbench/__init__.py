"""nsdbench: benchmark deep vision models against the human visual cortex (NSD)."""

__version__ = "0.1.0"
