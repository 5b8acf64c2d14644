"""When the retained state topic is re-published: Home Assistant's recorder budget.

Home Assistant stores a row for every change of a sensor's state *or* attributes, so a state
re-sent ten times a second (new probabilities each time) fills its database. The rule:

* a change of emotion is published at once;
* while one emotion holds, the state is re-published only when a probability (the confidence
  among them) moved by at least ``step`` since the last publish, and no sooner than
  ``min_interval_s`` after it.

With the defaults (0.1 and 30 s) a sensor changes at most twice a minute while one emotion
holds. Every message is one consistent snapshot (label, confidence and probabilities from the
same step), so what HA shows may lag by up to ``min_interval_s`` but never contradicts itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.decision import EmotionState


@dataclass
class StateBudget:
    min_interval_s: float
    step: float
    _last_t: float = -float("inf")
    _last: EmotionState | None = None

    def due(self, state: EmotionState, now: float, force: bool = False) -> bool:
        """True if ``state`` should be published now (and then counts as published)."""
        last = self._last
        changed = last is None or state.emotion != last.emotion
        if not (force or changed or (self._moved(last, state) and now - self._last_t >= self.min_interval_s)):
            return False
        self._last_t = now
        self._last = state
        return True

    def _moved(self, last: EmotionState | None, state: EmotionState) -> bool:
        if last is None or state.modalities != last.modalities:
            return True
        labels = last.probs.keys() | state.probs.keys()
        return any(abs(state.probs.get(k, 0.0) - last.probs.get(k, 0.0)) >= self.step for k in labels)
