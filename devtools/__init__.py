"""Local development and test tooling. Never packaged: Chalice ships app.py and chalicelib only."""
