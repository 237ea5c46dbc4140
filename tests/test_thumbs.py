"""Clickable thumbnails: messages from the browser become select / collect / remove actions."""

from __future__ import annotations

from dashboards.thumbs import Thumbs, card


def test_clicks_reach_the_callback_and_bad_messages_are_ignored():
    heard = []
    strip = Thumbs(on_action=lambda run, sample, action: heard.append((run, sample, action)), actions=["collect"])
    strip._handle_msg({"run": "r", "sample": "12", "action": "select"})
    strip._handle_msg({"run": "r", "sample": 12, "action": "collect"})
    for bad in ({"sample": "x", "action": "select"}, {"sample": 1, "action": "delete"}, {"action": "select"}, {}):
        strip._handle_msg(bad)
    assert heard == [("r", 12, "select"), ("r", 12, "collect")]


def test_a_card_points_at_the_image_route():
    c = card("run-1", 3, 42, "<b>label</b>", "0.123")
    assert c == {"run": "run-1", "sample": 42, "src": "/image/run-1/3/42/thumb", "caption": "<b>label</b>",
                 "detail": "0.123"}  # captions are drawn as text nodes in the browser, never parsed as HTML
    assert "textContent" in Thumbs._esm and "innerHTML" not in Thumbs._esm
