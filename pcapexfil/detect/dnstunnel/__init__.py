"""The `dns-tunnel` rule: DNS tunnels found from the names hosts ask for (docs/scoring.md).

window.py (what is measured per host and registered domain), history.py (closed windows of
the baseline period), score.py (a window against the host's and the domain's history),
rule.py (windows, closing, state, log rows and notices).
"""
