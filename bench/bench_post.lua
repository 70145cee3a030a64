-- wrk script for bench/bench.py: POST the JSON body found in the BENCH_BODY environment variable.
--   BENCH_BODY='{"messages":[...]}' wrk -t2 -c64 -d10s --latency -s bench/bench_post.lua URL
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
