"""New protocol: a host with an established baseline talks on a port it never used."""

from __future__ import annotations

from pcapexfil.detect.scores.base import WindowContext


class NewProtocol:
    name = "new_proto"
    priority = 6  # before the window joins the baseline
    column = None

    def run(self, ctx: WindowContext) -> float | None:
        w = ctx.window
        if ctx.bkey in ctx.baseline or not ctx.baseline.by_host.get(w.orig_h):
            return None
        if ctx.baseline.host_days(w.orig_h) >= ctx.settings.baseline_min_days_for_score:
            ctx.notices.raise_notice(
                "EXFIL_DETECTION::New_Protocol",
                ts=ctx.ts,
                msg=f"new protocol detected: protocol {w.resp_p}/{w.proto} from host {w.orig_h}",
                sub=f"protocol was found in following uids: [{', '.join(w.uids)}]",
                src=w.orig_h,
                p=w.resp_p,
                suppress_key=(w.orig_h, w.resp_p, w.proto, w.identifier),
                suppress_for=ctx.settings.aggregation_interval,
            )
        return None
