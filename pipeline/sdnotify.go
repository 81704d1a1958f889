package pipeline

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notifier speaks systemd's sd_notify protocol (one datagram per message
// to $NOTIFY_SOCKET), so a Type=notify unit knows when the daemon serves,
// when it stops, and that it is alive (watchdog). It is written by hand to
// avoid a dependency for a few lines. Without NOTIFY_SOCKET every method
// is a no-op, so callers need no checks.
type Notifier struct {
	socket   string
	watchdog time.Duration
}

// NewNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from
// the environment. The environment is left as is: the daemon starts no
// children that could mistake the socket for theirs.
func NewNotifier() *Notifier {
	n := &Notifier{socket: os.Getenv("NOTIFY_SOCKET")}
	if usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && usec > 0 {
		pid := os.Getenv("WATCHDOG_PID")
		if pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(usec) * time.Microsecond
		}
	}
	return n
}

// Enabled reports whether a notify socket is set.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval is WatchdogSec as told by systemd, or 0 when the
// watchdog is off.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Notify sends one message of newline-separated KEY=VALUE assignments.
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return errors.New("sd_notify: NOTIFY_SOCKET must be a path or an abstract socket (@name)")
	}
	// Go maps a leading '@' to the Linux abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// Ready tells systemd the daemon serves (READY=1) with a status line.
func (n *Notifier) Ready(status string) error {
	return n.Notify("READY=1\nSTATUS=" + oneLine(status))
}

// Stopping tells systemd the daemon is shutting down.
func (n *Notifier) Stopping(status string) error {
	return n.Notify("STOPPING=1\nSTATUS=" + oneLine(status))
}

// Reloading tells systemd a configuration reload started; Ready ends it.
func (n *Notifier) Reloading(status string) error {
	return n.Notify("RELOADING=1\nSTATUS=" + oneLine(status))
}

// Status sets the free-form status line shown by systemctl status.
func (n *Notifier) Status(status string) error {
	return n.Notify("STATUS=" + oneLine(status))
}

// Watchdog sends WATCHDOG=1 every WatchdogInterval/2 until ctx is done,
// as long as alive returns true (nil = always). A daemon whose alive check
// fails stops petting the watchdog, so systemd restarts it. It returns at
// once when the watchdog is off.
func (n *Notifier) Watchdog(ctx context.Context, alive func() bool) {
	iv := n.WatchdogInterval()
	if !n.Enabled() || iv <= 0 {
		return
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if alive == nil || alive() {
				_ = n.Notify("WATCHDOG=1")
			}
		}
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
