"""`lorakit ui`: a local web server over the library — a persisted job queue, live training
events and a documented JSON API (the pages build on it).

    workspace.py  the workspace folder and its settings.toml
    security.py   token, login cookie, same-origin checks; request paths kept inside the roots
    kinds.py      job kinds: what a submission may hold, checked, as a CLI argument list
    jobs.py       the SQLite job queue and the runner that starts, watches and stops job processes
    supervise.py  the small parent of each job process: its log and exit status, on disk
    events.py     Server-Sent Events from a run's events.jsonl
    app.py        the FastAPI app; routes_*.py its endpoints

This module imports nothing heavy, so `python -m lorakit.web.supervise` starts fast.
"""
