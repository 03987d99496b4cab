"""Streaming multi-turn chat (`--turns`, `--turns-spread`, `--think-time-s` between turns): each user holds
a conversation, sends its history plus a new user turn, and appends the reply it got."""

from loadgen.user import OpenAIUser
from loadgen.workloads.conversation import MultiTurnMixin


class MultiTurnChatUser(MultiTurnMixin, OpenAIUser):
    scenario = "multi_turn_chat"
    path = "/v1/chat/completions"
    stream = True
    checks_outputs = False  # a turn's request carries the replies before it

    def payload(self, prompt):
        return {"messages": prompt.messages}
