"""Ingest stage: find runs under paths (discover), read each log format (tfevents, csvlog, jsonlog)."""
