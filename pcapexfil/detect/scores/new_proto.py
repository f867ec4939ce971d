"""New protocol: a host with an established baseline talks on a port it never used.

The test reads all of the host's baselines (per-key stage, so the key partition is the host);
the notice, with its suppression, is raised in the ordered stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcapexfil.detect.scores.base import WindowContext

if TYPE_CHECKING:
    from pcapexfil.detect.stages import Closed, OrderedStage


class NewProtocol:
    name = "new_proto"
    priority = 6  # before the window joins the baseline
    column = None

    def run(self, ctx: WindowContext) -> float | None:
        """1.0 when the window is a new protocol of a host with enough baseline days, else None."""
        w = ctx.window
        if ctx.bkey in ctx.baseline or not ctx.baseline.by_host.get(w.orig_h):
            return None
        return 1.0 if ctx.baseline.host_days(w.orig_h) >= ctx.settings.baseline_min_days_for_score else None

    def finish(self, value: float | None, closed: Closed, stage: OrderedStage) -> float | None:
        if value is not None:
            w = closed.window
            stage.notices.raise_notice(
                "EXFIL_DETECTION::New_Protocol",
                ts=closed.ts,
                msg=f"new protocol detected: protocol {w.resp_p}/{w.proto} from host {w.orig_h}",
                sub=f"protocol was found in following uids: [{', '.join(w.uids)}]",
                src=w.orig_h,
                p=w.resp_p,
                suppress_key=(w.orig_h, w.resp_p, w.proto, w.identifier),
                suppress_for=stage.settings.aggregation_interval,
            )
        return None
