"""The agent: providers, the loop and its tools."""
