"""Print what the bot sends to Microsoft 365 Agents Playground, with the ids you need to click as someone else.

    .venv/bin/python docs/playground/watch.py [--url http://127.0.0.1:56150] [--seconds N]

Reads the Playground's two websockets: the conversation stream (messages in chats that include the Playground's
current user, with their conversation) and the log stream (every HTTP exchange, including messages to chats the
web UI does not show, such as an approver's 1:1 chat). Connect it before acting: neither stream replays history.
For each card it prints the conversation id and message id (`conversation.id` and `replyToId` of
POST /_conversation/v1/invoke) and each Action.Execute button with its verb and data. See docs/playground.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
from typing import Any

import aiohttp

REQUEST_ID = re.compile(r"\bBG-[A-Z0-9]{6}\b")


def texts(node: Any, out: list[str]) -> list[str]:
    if isinstance(node, dict):
        if node.get("type") == "TextBlock" and node.get("text"):
            out.append(str(node["text"]))
        for key, value in node.items():
            if key not in ("actions", "refresh", "fallback"):
                texts(value, out)
    elif isinstance(node, list):
        for item in node:
            texts(item, out)
    return out


def buttons(node: Any, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "Action.Execute" and node.get("verb"):
            out.append(node)
        for key, value in node.items():
            if key not in ("refresh", "fallback"):
                buttons(value, out)
    elif isinstance(node, list):
        for item in node:
            buttons(item, out)
    return out


def describe(activity: dict[str, Any]) -> list[str]:
    lines = []
    if activity.get("text"):
        lines.append(str(activity["text"])[:200])
    for attachment in activity.get("attachments") or []:
        card = attachment.get("content") or {}
        shown = [t for t in texts(card.get("body") or [], []) if t.strip()][:3]
        lines.append(" · ".join(t[:90] for t in shown))
        found = buttons(card.get("actions") or [], [])
        refresh = card.get("refresh") or {}
        if refresh and not found:
            lines.append(f"read-only here; in Teams {', '.join(refresh.get('userIds') or [])} would see Approve/Deny "
                         f"(refresh, which the Playground does not support)")
        for b in found:
            lines.append(f'button "{b.get("title")}": verb {b["verb"]}, data {json.dumps(b.get("data") or {})}')
    return lines or ["(empty message)"]


class Watch:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.seen: set[str] = set()  # message ids shown via the conversation stream
        self.one_to_one: dict[str, str] = {}  # member id -> 1:1 conversation the bot created
        self.created: tuple[float, str, str] | None = None  # (when, member, conversation) of the last one
        self.hidden: dict[str, tuple[str, str]] = {}  # message id -> (where, conversation) of hidden messages

    def show(self, kind: str, where: str, conversation: str, message_id: str, lines: list[str]) -> None:
        print(f"{time.strftime('%H:%M:%S')}  {kind:<6} {where}\n          conversation={conversation}  "
              f"message={message_id}", flush=True)
        for line in lines:
            print(f"          {line}", flush=True)

    async def conversations(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            event = json.loads(frame.data)
            message = event.get("message") or {}
            if message.get("from", {}).get("id", "").startswith("29:"):
                continue  # the current user's own messages
            conversation = str(event.get("actionConversationId") or "")
            message_id = str(message.get("messageId") or "")
            self.seen.add(message_id)
            where = "chat"
            if "@thread.tacv2" in conversation:
                # A post the bot started with POST /v3/conversations is its own thread; clicks must name it.
                conversation = f"{conversation};messageid={message_id}" if ";" not in conversation else conversation
                where = "channel thread"
            kind = "NEW" if event.get("action") == "createMessage" else "UPDATE"
            self.show(kind, where, conversation, message_id, describe(message))

    async def log(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            entry = (json.loads(frame.data).get("log")) or {}
            body = (entry.get("request") or {}).get("body")
            response = entry.get("response") or {}
            name = entry.get("activityName")
            if name == "createConversation" and isinstance(body, dict) and not body.get("isGroup"):
                members = [m.get("id") for m in body.get("members") or []]
                conversation = (response.get("body") or {}).get("id", "")
                for member in members:
                    self.one_to_one[member] = conversation
                    self.created = (time.monotonic(), member, conversation)
            elif (name == "message" and entry.get("from") == "User Application" and isinstance(body, dict)
                  and body.get("type") == "message" and entry.get("messageId")):
                # Log entries of the bot's messages carry no conversation id. A message to a chat the UI shows
                # also arrives on the conversation stream; one that does not is in a hidden chat, normally the
                # 1:1 the bot has just created (it creates the chat, then posts into it).
                just = self.created if self.created and time.monotonic() - self.created[0] < 2 else None
                kind = "NEW" if response.get("statusCode") == 201 else "UPDATE"
                asyncio.get_running_loop().call_later(1.0, self._hidden, kind, str(entry.get("messageId")), body,
                                                      just)
            elif name == "invoke" and isinstance(body, dict):
                verb = ((body.get("value") or {}).get("action") or {}).get("verb")
                answer = response.get("body") or {}
                first = describe({"attachments": [{"content": answer.get("value")}]})[0] \
                    if isinstance(answer, dict) and isinstance(answer.get("value"), dict) else ""
                print(f"{time.strftime('%H:%M:%S')}  CLICK  {body.get('from', {}).get('id')} {verb} in "
                      f"{(body.get('conversation') or {}).get('id')} -> HTTP {response.get('statusCode')} "
                      f"{first[:120]}", flush=True)

    def _hidden(self, kind: str, message_id: str, body: dict[str, Any],
                just: tuple[float, str, str] | None) -> None:
        if message_id in self.seen:
            return
        if message_id in self.hidden:
            where, conversation = self.hidden[message_id]
        elif kind == "NEW" and just is not None:
            where, conversation = f"1:1 chat with {just[1]} (not shown in the UI)", just[2]
            self.hidden[message_id] = (where, conversation)
        else:  # e.g. the bot reused a 1:1 chat it created before this watcher started
            where = "a 1:1 chat the UI does not show"
            conversation = "? (look it up: POST /_connector/v3/conversations, see docs/playground.md)"
        self.show(kind, where, conversation, message_id, describe(body))

    async def run(self, seconds: float | None) -> None:
        ws_url = "ws" + self.url[len("http"):]
        async with aiohttp.ClientSession() as session:
            conv = await session.ws_connect(ws_url + "/_ws_conversation/v1/conversations/stream")
            log = await session.ws_connect(ws_url + "/_ws/log/stream")
            print(f"watching {self.url} (Ctrl-C stops)", flush=True)
            tasks = [asyncio.create_task(self.conversations(conv)), asyncio.create_task(self.log(log))]
            try:
                await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await conv.close()
                await log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:56150", help="the Playground (default %(default)s)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Watch(args.url).run(args.seconds))


if __name__ == "__main__":
    main()
