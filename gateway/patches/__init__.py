"""
Every change the gateway makes to a library's internals, apart from the domain: a module per
library and concern, each checked at start-up against the installed release (falling back to the
library's own path, with a warning, where the check fails) and bounded in requirements.txt.

    sanic_config.py     Sanic's `Config`: the eight settings read per connection as properties
                        (3.4% of a stream's instructions, docs/performance.md "Library patches")
    sanic_protocol.py   Sanic's HTTP protocol: a deadline for the request head, an idle limit for
                        the body (behaviour Sanic lacks)
    sanic_manager.py    Sanic's worker manager: stop signals deferred around its state store, the
                        listener closed first at shutdown, dead workers replaced (behaviour)
    prometheus.py       prometheus-client's multiprocess values, written once per event-loop step
                        (5.2% of a stream's instructions)
"""
