-- SPDX-License-Identifier: Apache-2.0
-- wrk script for bench/proxy.sh: prints one machine-readable line when the run ends and, when
-- BENCH_PACE_MS is set, paces every connection so the total rate is fixed (wrk2 is not in
-- Debian). Each connection waits a random delay averaging BENCH_PACE_MS between its requests
-- (uniform in [0.5, 1.5] x the mean, which also keeps the connections from marching in step), so
-- C connections give about C * 1000 / (BENCH_PACE_MS + latency) requests/s. wrk starts a
-- request's latency clock when it writes the request, so the pacing delay is never counted.

local pace_ms = tonumber(os.getenv("BENCH_PACE_MS") or "")

if pace_ms and pace_ms > 0 then
    function delay()
        return math.floor(pace_ms * (0.5 + math.random()))
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d connect_errors=%d read_errors=%d write_errors=%d " ..
        "timeouts=%d non2xx=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
        summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
