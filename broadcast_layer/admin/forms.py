"""The admin's inputs: the rooms list's query string, the send form, the member form."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django import forms
from django.http import QueryDict
from django.utils.http import urlencode

from .._protocol.globs import MAX_GLOB_LENGTH, compile_glob
from .._protocol.validation import (
    MAX_NAME_LENGTH,
    MAX_TYPE_LENGTH,
    loads_object,
    require_valid_channel_name,
    require_valid_message_type,
)
from ..emitter import emitter_settings
from ..registry import MAX_OFFSET, Order

__all__ = ["MemberForm", "RoomQuery", "SendMessageForm"]

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
        raw_offset = params.get("offset", "0")
        offset = int(raw_offset) if raw_offset.isascii() and raw_offset.isdigit() else 0
        # A search longer than any glob is refused by pattern_error; keep it short in URLs.
        q = params.get("q", "").strip()[: MAX_GLOB_LENGTH + 1]
        return cls(q, order, min(offset, MAX_OFFSET))

    @property
    def pattern(self) -> str | None:
        """The glob for the registry: ``q`` itself, or ``*q*`` when it has no wildcard."""
        if not self.q:
            return None
        return self.q if _GLOB_CHARS & set(self.q) else f"*{self.q}*"

    @property
    def pattern_error(self) -> str | None:
        """Why :attr:`pattern` is refused (malformed, too long...), or None if it is fine."""
        if self.pattern is None:
            return None
        try:
            compile_glob(self.pattern)
        except ValueError as exc:
            return str(exc)
        return None

    def url(self, **changes: Any) -> str:
        """This query string with some values changed (``offset=0`` on a new order)."""
        query = replace(self, **changes)
        params = {"q": query.q, "o": query.order if query.order != "name" else "",
                  "offset": query.offset}  # fmt: skip
        return "?" + urlencode({key: value for key, value in params.items() if value})


class SendMessageForm(forms.Form):
    """A message for a room: a type and a text, or a JSON object sent as it is."""

    type = forms.CharField(
        max_length=MAX_TYPE_LENGTH,
        strip=False,  # "chat.message\n" is refused, not quietly changed
        help_text="The handler it reaches: a.b calls a_b().",
    )
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
        value: str = self.cleaned_data["type"]
        try:  # the admin never sends protocol types (websocket.*, http.*, lifespan.*)
            return require_valid_message_type(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_body(self) -> dict[str, Any] | None:
        raw = self.cleaned_data["body"].strip()
        if not raw:
            return None
        try:
            return loads_object(raw)
        except (TypeError, ValueError) as exc:
            raise forms.ValidationError(f"The JSON body {exc}.") from None

    def clean(self) -> dict[str, Any] | None:
        data = super().clean() or {}
        body = data.get("body")
        if data.get("text") and body is not None:
            raise forms.ValidationError("Give a text or a JSON body, not both.")
        if not data.get("text") and body is None and not self.errors:
            raise forms.ValidationError("Give a text or a JSON body.")
        if body is not None and "type" in body:  # the body's own type is sent as it is
            try:
                require_valid_message_type(body["type"])
            except ValueError as exc:
                self.add_error("body", f'Its "type": {exc}')
        return data

    def message(self) -> dict[str, Any]:
        """The message to send (call after ``is_valid()``)."""
        data = self.cleaned_data
        if data["body"] is not None:
            return {"type": data["type"], **data["body"]}
        return {"type": data["type"], "text": data["text"]}


class MemberForm(forms.Form):
    """The channel a member action is about."""

    channel = forms.CharField(max_length=MAX_NAME_LENGTH, strip=False)

    def clean_channel(self) -> str:
        try:
            return require_valid_channel_name(self.cleaned_data["channel"])
        except TypeError as exc:
            raise forms.ValidationError(str(exc)) from None
