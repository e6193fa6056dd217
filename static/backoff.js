// How long a page waits before it tries again. Every wait is random ("full jitter"): after a
// server restart, pages that all lost their socket at the same instant come back spread out
// instead of all at once.

// The wait before reconnect attempt `attempt` (0 for the first): anywhere from nothing to
// base·2^attempt, at most `capMs`.
export function backoffMs(attempt, baseMs, capMs, random = Math.random) {
  return random() * Math.min(capMs, baseMs * 2 ** attempt);
}

// A wait anywhere between `minMs` and `maxMs`.
export function betweenMs(minMs, maxMs, random = Math.random) {
  return minMs + random() * (maxMs - minMs);
}
