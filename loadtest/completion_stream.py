"""Streaming text completions (/v1/completions) with the prompt as plain text."""

from loadgen.user import OpenAIUser


class CompletionStreamUser(OpenAIUser):
    scenario = "completion_stream"
    path = "/v1/completions"
    stream = True

    def payload(self, prompt):
        return {"prompt": prompt.text}
