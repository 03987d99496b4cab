"""Streaming chat with images (`--image-size`, `--image-dir`, `--images-per-request`)."""

from loadgen.images import image_pool
from loadgen.user import OpenAIUser


class VisionChatStreamUser(OpenAIUser):
    scenario = "vision_chat_stream"
    path = "/v1/chat/completions"
    stream = True
    checks_outputs = False  # its images are drawn per user

    def payload(self, prompt):
        s = self._run.settings
        pool = image_pool(s.image_size, s.image_dir, s.seed)
        images = [
            {"type": "image_url", "image_url": {"url": self._rng.choice(pool)}}
            for _ in range(s.images_per_request)
        ]
        # The chat variant of the prompt: its length was made for a chat request (template included).
        last = prompt.messages[-1].get("content")
        text = last if isinstance(last, str) else prompt.text
        return {"messages": [{"role": "user", "content": [{"type": "text", "text": text}, *images]}]}
