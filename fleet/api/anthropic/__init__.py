"""Anthropic's Messages API over Fleet's chat: its requests become chat requests (`to_chat`),
which run the one generation path; the chat answers and stream frames that come back become
Messages answers (`answer`) and Anthropic's server-sent events (`events`); its errors take
Anthropic's shape (`errors`). The bodies are fleet.api.protocol.anthropic's, the routes
fleet.api.routes.messages'."""
