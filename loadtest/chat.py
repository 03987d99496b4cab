"""Non-streaming chat completions: one JSON body per request (no TTFT)."""

from loadgen.user import OpenAIUser


class ChatUser(OpenAIUser):
    scenario = "chat"
    path = "/v1/chat/completions"
    stream = False

    def payload(self, prompt):
        return {"messages": prompt.messages}
