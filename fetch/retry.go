package fetch

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// parseRetryAfter reads Retry-After as delta-seconds or HTTP-date (C25).
// Values that look like absolute epoch seconds or milliseconds (a known
// server bug) are read as such rather than as decades of delay.
func parseRetryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		switch {
		case n > 1e12:
			return time.UnixMilli(n).Sub(now), true
		case n > 1e9:
			return time.Unix(n, 0).Sub(now), true
		default:
			return time.Duration(n) * time.Second, true
		}
	}
	if f, err := strconv.ParseFloat(h, 64); err == nil && f < 1e9 {
		return time.Duration(f * float64(time.Second)), true
	}
	if t, err := http.ParseTime(h); err == nil {
		return t.Sub(now), true
	}
	return 0, false
}

// clamp bounds every wait to [MinWait, MaxWait] (C26).
func (c *Client) clamp(d time.Duration) time.Duration {
	return min(max(d, c.o.MinWait), c.o.MaxWait)
}

// backoff is the n-th (0-based) exponential wait: MinWait·2ⁿ, capped at
// limit, with ±20% jitter, then clamped.
func (c *Client) backoff(n int, limit time.Duration) time.Duration {
	d := c.o.MinWait
	for i := 0; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	j := 0.8 + 0.4*rand.Float64()
	return c.clamp(time.Duration(float64(d) * j))
}

// waitFor returns the server's Retry-After (clamped) or the n-th backoff.
func (c *Client) waitFor(resp *http.Response, n int, limit time.Duration) time.Duration {
	if resp != nil {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return c.clamp(d)
		}
	}
	return c.backoff(n, limit)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryLimit caps request-retry backoff, which need not grow as far as polls.
func (c *Client) retryLimit() time.Duration { return min(c.o.MaxWait, time.Minute) }

// pollLimit caps the backoff between polls when the server sends no Retry-After.
func (c *Client) pollLimit() time.Duration { return min(c.o.MaxWait, 5*time.Minute) }
