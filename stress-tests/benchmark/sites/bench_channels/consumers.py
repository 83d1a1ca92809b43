"""The broadcast consumer: joins the group ``bench`` and forwards every group message."""

from channels.generic.websocket import AsyncWebsocketConsumer

GROUP = "bench"


class BroadcastConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def broadcast_message(self, event):
        await self.send(text_data=event["text"])
