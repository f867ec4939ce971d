"""Zeek-format log writers (TSV and JSON) and the schemas of the logs pcapexfil writes."""
