package pipeline

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// listenNotify plays systemd: a unix datagram socket in a temp folder.
func listenNotify(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // short: sun_path holds 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn, path
}

func recv(t *testing.T, conn *net.UnixConn, within time.Duration) string {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(within)))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

func TestNotifierSendsStates(t *testing.T) {
	conn, path := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "")
	n := NewNotifier()
	require.True(t, n.Enabled())
	require.Zero(t, n.WatchdogInterval())

	require.NoError(t, n.Ready("serving 2 sources\non 127.0.0.1:9464"))
	require.Equal(t, "READY=1\nSTATUS=serving 2 sources on 127.0.0.1:9464", recv(t, conn, time.Second))
	require.NoError(t, n.Status("run of ehr in progress"))
	require.Equal(t, "STATUS=run of ehr in progress", recv(t, conn, time.Second))
	require.NoError(t, n.Reloading("reloading"))
	require.True(t, strings.HasPrefix(recv(t, conn, time.Second), "RELOADING=1\n"))
	require.NoError(t, n.Stopping("stopping"))
	require.Equal(t, "STOPPING=1\nSTATUS=stopping", recv(t, conn, time.Second))
}

func TestNotifierWatchdog(t *testing.T) {
	conn, path := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := NewNotifier()
	require.Equal(t, 200*time.Millisecond, n.WatchdogInterval())

	var alive atomic.Bool
	alive.Store(true)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { n.Watchdog(ctx, alive.Load); close(done) }()
	t0 := time.Now()
	require.Equal(t, "WATCHDOG=1", recv(t, conn, time.Second))
	require.Equal(t, "WATCHDOG=1", recv(t, conn, time.Second))
	el := time.Since(t0)
	require.GreaterOrEqual(t, el, 190*time.Millisecond, "two pings at WatchdogSec/2 take about WatchdogSec")
	require.Less(t, el, 600*time.Millisecond)

	// A daemon that is not alive stops petting the watchdog.
	alive.Store(false)
	time.Sleep(150 * time.Millisecond) // let a ping already under way land
	_ = conn.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
	buf := make([]byte, 64)
	for {
		_, err := conn.Read(buf)
		if err != nil {
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			break
		}
		// Drain at most the one ping sent before the flag flipped.
		require.Less(t, time.Since(t0), 900*time.Millisecond, "pings continued while not alive")
	}
	cancel()
	<-done
}

func TestNotifierWatchdogForAnotherPID(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/nonexistent")
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "1")
	require.Zero(t, NewNotifier().WatchdogInterval(), "the watchdog belongs to another process")
}

func TestNotifierOffWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := NewNotifier()
	require.False(t, n.Enabled())
	require.NoError(t, n.Ready("x"))
	var nilN *Notifier
	require.NoError(t, nilN.Stopping("x"))

	t.Setenv("NOTIFY_SOCKET", "relative/path")
	require.Error(t, NewNotifier().Ready("x"))
}
