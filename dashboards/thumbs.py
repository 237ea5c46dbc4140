"""Clickable thumbnails: one strip of sample images used for neighbours, the gallery, the collected set
and generated samples. Clicking a card selects its sample; small buttons on a card collect it ("+") or
remove it from a list ("×"). Drawn in the browser with DOM text nodes, so captions are never parsed as
HTML.
"""

from __future__ import annotations

from typing import Callable

import param
from panel.custom import JSComponent

from dashboards.render import CSS, image_url

ACTION_LABELS = {"collect": ("+", "add to the collected set"), "remove": ("×", "remove from this list")}


class Thumbs(JSComponent):
    """A wrapping strip of thumbnail cards; `on_action(run_id, sample_id, action)` hears clicks
    (action "select", "collect" or "remove")."""

    items = param.List(default=[], doc="cards: {run, sample, src, caption, detail}")
    actions = param.List(default=[], doc="buttons on every card: 'collect', 'remove'")
    labels = param.Dict(default=ACTION_LABELS, constant=True)

    _esm = """
    export function render({ model, el }) {
      const draw = () => {
        const strip = document.createElement('div');
        strip.className = 'lens-thumbs';
        for (const item of model.items) {
          const card = document.createElement('div');
          card.className = 'lens-thumb lens-clickable';
          card.dataset.sample = item.sample;
          card.dataset.run = item.run;
          card.title = 'select sample ' + item.sample;
          const img = document.createElement('img');
          img.src = item.src;
          img.loading = 'lazy';
          card.append(img);
          const caption = document.createElement('div');
          caption.textContent = item.caption;
          card.append(caption);
          if (item.detail) {
            const detail = document.createElement('div');
            detail.className = 'lens-distance';
            detail.textContent = item.detail;
            card.append(detail);
          }
          card.addEventListener('click', () => model.send_msg({run: item.run, sample: item.sample, action: 'select'}));
          for (const action of model.actions) {
            const [text, title] = model.labels[action];
            const button = document.createElement('button');
            button.className = 'lens-thumb-' + action;
            button.textContent = text;
            button.title = title;
            button.addEventListener('click', (event) => {
              event.stopPropagation();
              model.send_msg({run: item.run, sample: item.sample, action: action});
            });
            card.append(button);
          }
          strip.append(card);
        }
        el.replaceChildren(strip);
      };
      draw();
      model.on('items', draw);
    }
    """
    _stylesheets = [CSS + """
    .lens-thumb { position: relative; cursor: pointer; }
    .lens-thumb:hover img { outline: 2px solid #0072b2; }
    .lens-thumb button { position: absolute; top: 0; width: 18px; height: 18px; padding: 0; font-size: 12px;
      line-height: 16px; border: 1px solid #888; border-radius: 9px; background: #fff; cursor: pointer; }
    .lens-thumb button.lens-thumb-collect { left: 2px; }
    .lens-thumb button.lens-thumb-remove { right: 2px; }
    """]

    def __init__(self, on_action: Callable[[str, int, str], None] | None = None, **params) -> None:
        super().__init__(**params)
        self.on_action = on_action

    def _handle_msg(self, msg: dict) -> None:
        if self.on_action is None or msg.get("action") not in ("select", "collect", "remove"):
            return
        try:
            sample = int(msg["sample"])
        except (KeyError, TypeError, ValueError):
            return
        self.on_action(str(msg.get("run", "")), sample, msg["action"])


def card(run_id: str, chunk: int, sample_id: int, caption: str, detail: str = "") -> dict:
    """One thumbnail card for `Thumbs.items`."""
    return {"run": run_id, "sample": int(sample_id), "src": image_url(run_id, chunk, sample_id),
            "caption": caption, "detail": detail}
