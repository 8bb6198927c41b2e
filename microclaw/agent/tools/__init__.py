"""Agent tools: the `Toolbox` the loop calls, sandbox tools (files, commands, web) and host
tools (messages, scheduled tasks, group admin). See `microclaw.agent.tools.base`."""
