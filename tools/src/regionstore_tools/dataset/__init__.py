"""Realistic Olist-style customers and the tools that load them into regionstore.

``olist`` generates customers, ``olist_csv`` reads and writes Olist's CSV, ``loader`` sends
either to the gateway's batch endpoint, and ``cli`` is ``python -m regionstore_tools.dataset``.
"""
