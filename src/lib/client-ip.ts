/**
 * The client's address. `X-Forwarded-For` is honoured only as far as `trustedHops`
 * reverse proxies: each appends the address it received from, so with N trusted hops
 * the client is the N-th entry from the right. Without trusted hops the header is
 * ignored (anyone can send it) and the TCP peer is the client.
 */
export function clientIp(forwardedFor: string | undefined, peer: string | undefined, trustedHops: number): string {
  if (trustedHops > 0 && forwardedFor) {
    const hops = forwardedFor
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    const candidate = hops[Math.max(0, hops.length - trustedHops)];
    if (candidate && isPlausibleAddress(candidate)) return candidate;
  }
  return peer ?? "unknown";
}

// IPv4, IPv6 (optionally bracketed) — enough to refuse junk used as a rate-limit key.
const plausible = /^(\d{1,3}(\.\d{1,3}){3}|\[?[0-9a-fA-F:.]{2,45}\]?)$/;
function isPlausibleAddress(value: string): boolean {
  return value.length <= 47 && plausible.test(value);
}
