"""The HTTP layer: OpenAI-compatible endpoints and Xinference's management API. It knows the
cluster's actors, never the engines."""
