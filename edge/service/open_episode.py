"""The open episode, remembered in the state directory so that a crash cannot orphan it.

An automation that waits for an episode's ``end`` (lights back to normal) would wait forever if
the daemon died (SIGKILL, power loss) with the episode open. So the open episode is saved with
the outbox's settings (same SQLite file, same durability) *before* its ``new`` event is stored,
and forgotten only *after* its ``end`` is. On the next start, an episode still recorded gets its
``end`` with ``"reason": "restart"``. A crash between the save and the ``new`` can at worst
produce an ``end`` for an episode nobody saw start, which consumers ignore; the reverse order
could lose the ``end``, which is the bug this fixes.
"""

from __future__ import annotations

from edge.decision import EpisodeEvent
from edge.outbox import AsyncOutbox

SETTING = "open_episode"
RESTART = "restart"


class OpenEpisode:
    def __init__(self, outbox: AsyncOutbox) -> None:
        self.outbox = outbox

    async def before_store(self, events: list[EpisodeEvent]) -> None:
        """Save an episode that these events open (call before storing them)."""
        opened = [ev for ev in events if ev.type == "new"]
        if opened:
            ev = opened[-1]
            await self.outbox.save_settings(
                SETTING, {"id": ev.episode_id, "emotion": ev.emotion, "modalities": ev.modalities}
            )

    async def after_store(self, events: list[EpisodeEvent]) -> None:
        """Forget the episode once its ``end`` is stored, unless a later event opened another."""
        if events and events[-1].type == "end":
            await self.outbox.save_settings(SETTING, {})

    async def recover(self, t: float) -> list[EpisodeEvent]:
        """The ``end`` of an episode the previous run left open, or nothing."""
        saved = await self.outbox.load_settings(SETTING)
        if not isinstance(saved.get("id"), str) or not isinstance(saved.get("emotion"), str):
            return []
        modalities = saved.get("modalities")
        return [
            EpisodeEvent(
                type="end",
                episode_id=saved["id"],
                emotion=saved["emotion"],
                confidence=0.0,
                probs={},
                modalities=[str(m) for m in modalities] if isinstance(modalities, list) else [],
                t=t,
                started_t=t,
                reason=RESTART,
            )
        ]
