-- wrk reporter: one machine-readable line after the run, read by benches/run.sh.
-- Latencies are microseconds; errors add up wrk's connect, read, write, timeout and non-2xx/3xx.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d max_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout + e.status, e.status))
end
