"""OpenAI's Responses API over Fleet's chat: its requests become chat requests (`to_chat`),
which run the one generation path; the chat answers and stream frames that come back become
Response objects (`answer`) and the Responses API's typed server-sent events (`events`). The
body is fleet.api.protocol.openai_responses', the routes fleet.api.routes.responses'. Errors
keep OpenAI's shape, as on every route but Anthropic's."""
