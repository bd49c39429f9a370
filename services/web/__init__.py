"""The HTTP front of ragmesh: an OpenAI-compatible chat API, a small REST + SSE mapping
of the gateway, and an MCP server. It holds no state: every request becomes calls to
the gateway through the asyncio SDK (ragmesh.client.aio), with the caller's API key."""
