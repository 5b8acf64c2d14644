"""The ``stats`` payload: counters from every part of the running service."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.sources.serial_emg import SerialEmgSource

if TYPE_CHECKING:
    from edge.service.supervisor import Service


async def collect_stats(service: Service) -> dict[str, Any]:
    pipeline = service.pipeline
    out: dict[str, Any] = {
        "version": __version__,
        "device_id": service.config.device_id,
        "uptime_s": round(time.monotonic() - service.started_monotonic, 1),
        "switches": dict(service.switches),
        "modalities": pipeline.availability(),
    }
    if service.link is not None:
        out["mqtt"] = asdict(service.link.stats)
    if service.outbox is not None:
        out["outbox"] = await service.outbox.stats()
    tasks = service.supervisor.stats()
    if tasks:
        out["tasks"] = tasks
    if pipeline.emg_stage is not None:
        st = pipeline.emg_stage.stats
        lat = st.inference_ms.summary()
        out["emg"] = {
            "samples": st.samples,
            "windows": st.windows,
            "paused_samples": st.paused_samples,
            "discontinuities": st.discontinuities,
            "clock_resyncs": st.clock_resyncs,
            "inference_ms_p50": lat["p50"],
            "inference_ms_max": lat["max"],
        }
    if pipeline.emg_queue is not None:
        out.setdefault("emg", {})["queue"] = asdict(pipeline.emg_queue.stats)
    if isinstance(pipeline.emg_source, SerialEmgSource):
        out.setdefault("emg", {})["serial"] = {
            **asdict(pipeline.emg_source.stats),
            **pipeline.emg_source.parse_stats.as_dict(),
        }
    camera: dict[str, Any] = {}
    if pipeline.camera is not None:
        stage = pipeline.camera_stage
        camera.update(asdict(pipeline.camera.stats), paused=stage.paused if stage else None)
    if pipeline.camera_stage is not None:
        cst = pipeline.camera_stage.stats
        camera.update(
            frames_classified=cst.frames,
            frames_with_face=cst.frames_with_face,
            faces=cst.faces,
            frames_ignored_paused=cst.ignored_paused,
            frames_discarded_paused=cst.discarded_paused,
            frame_errors=cst.errors,
            inference_ms_p50=cst.inference_ms.summary()["p50"],
        )
    if pipeline.camera_slot is not None:
        camera["slot"] = asdict(pipeline.camera_slot.stats)
    if camera:
        out["camera"] = camera
    out["calibration"] = service.calibration.stats()
    if service.web is not None:
        out["web"] = service.web.stats()
    return out
