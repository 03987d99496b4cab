"""Streaming chat completions: the default scenario."""

from loadgen.user import OpenAIUser


class ChatStreamUser(OpenAIUser):
    scenario = "chat_stream"
    path = "/v1/chat/completions"
    stream = True

    def payload(self, prompt):
        return {"messages": prompt.messages}
