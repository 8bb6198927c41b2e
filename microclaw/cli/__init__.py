"""The command-line programs: `host` (``microclaw-host``), `chat` (``microclaw``), and what
they share (`common`)."""
