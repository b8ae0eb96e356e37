"""The admin's inputs: the rooms list's query string, the send form, the member form."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from channels.layers import BaseChannelLayer
from django import forms
from django.http import QueryDict
from django.utils.http import urlencode

from .emitter import emitter_settings
from .registry import Order

__all__ = ["MemberForm", "RoomQuery", "SendMessageForm"]

_names = BaseChannelLayer()  # name validation only
# A Channels message type names a consumer method ("chat.message" -> chat_message);
# Channels refuses types starting with "_".
_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class RoomQuery:
    """The rooms list's ``?q=``, ``?o=`` and ``?offset=``; bad values fall back to defaults."""

    q: str = ""
    order: Order = "name"
    offset: int = 0

    @classmethod
    def from_get(cls, params: QueryDict) -> RoomQuery:
        order: Order = "size" if params.get("o") == "size" else "name"
        try:
            offset = max(0, int(params.get("offset", 0)))
        except ValueError:
            offset = 0
        return cls(params.get("q", "").strip(), order, offset)

    @property
    def pattern(self) -> str | None:
        """The glob for the registry: ``q`` itself, or ``*q*`` when it has no wildcard."""
        if not self.q:
            return None
        return self.q if _GLOB_CHARS & set(self.q) else f"*{self.q}*"

    def url(self, **changes: Any) -> str:
        """This query string with some values changed (``offset=0`` on a new order)."""
        query = replace(self, **changes)
        params = {"q": query.q, "o": query.order if query.order != "name" else "",
                  "offset": query.offset}  # fmt: skip
        return "?" + urlencode({key: value for key, value in params.items() if value})


class SendMessageForm(forms.Form):
    """A message for a room: a type and a text, or a JSON object sent as it is."""

    type = forms.CharField(max_length=100, help_text="The handler it reaches: a.b calls a_b().")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    body = forms.CharField(
        required=False,
        label="JSON body",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="A JSON object sent as the whole message instead of the text; "
        'without a "type" it gets the one above.',
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["type"].initial = emitter_settings()["DEFAULT_TYPE"]

    def clean_type(self) -> str:
        value: str = self.cleaned_data["type"].strip()
        if not _TYPE_RE.fullmatch(value):
            raise forms.ValidationError("Use letters, digits, '.' and '_', starting with a letter.")
        return value

    def clean_body(self) -> dict[str, Any] | None:
        raw = self.cleaned_data["body"].strip()
        if not raw:
            return None
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise forms.ValidationError("The JSON body must be an object ({...}).")
        return body

    def clean(self) -> dict[str, Any] | None:
        data = super().clean() or {}
        if data.get("text") and data.get("body") is not None:
            raise forms.ValidationError("Give a text or a JSON body, not both.")
        if not data.get("text") and data.get("body") is None and not self.errors:
            raise forms.ValidationError("Give a text or a JSON body.")
        return data

    def message(self) -> dict[str, Any]:
        """The message to send (call after ``is_valid()``)."""
        data = self.cleaned_data
        if data["body"] is not None:
            return {"type": data["type"], **data["body"]}
        return {"type": data["type"], "text": data["text"]}


class MemberForm(forms.Form):
    """The channel a member action is about."""

    channel = forms.CharField(max_length=200)

    def clean_channel(self) -> str:
        channel: str = self.cleaned_data["channel"]
        try:
            _names.require_valid_channel_name(channel)
        except TypeError as exc:
            raise forms.ValidationError(str(exc)) from None
        return channel
