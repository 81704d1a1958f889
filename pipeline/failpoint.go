package pipeline

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Failpoints let the crash tests kill a real fhirferry process with SIGKILL
// at exact points of a run: FHIRFERRY_FAILPOINT=name[:n] kills the process
// the n-th time (default 1st) the run passes the named point. Names:
// polling (status URL saved, before the first poll), spooled (a file
// stored), written (a batch written to the sinks), committed (every sink
// committed, before cleanup). Unset, a failpoint costs one map lookup.
var failpoints = parseFailpoints(os.Getenv("FHIRFERRY_FAILPOINT"))

type failpointSet struct {
	mu    sync.Mutex
	after map[string]int
}

func parseFailpoints(spec string) *failpointSet {
	fs := &failpointSet{after: map[string]int{}}
	for _, p := range strings.Split(spec, ",") {
		name, n, _ := strings.Cut(strings.TrimSpace(p), ":")
		if name == "" {
			continue
		}
		count, err := strconv.Atoi(n)
		if err != nil || count < 1 {
			count = 1
		}
		fs.after[name] = count
	}
	return fs
}

func failpoint(name string) {
	if len(failpoints.after) == 0 {
		return
	}
	failpoints.mu.Lock()
	defer failpoints.mu.Unlock()
	n, ok := failpoints.after[name]
	if !ok {
		return
	}
	if n > 1 {
		failpoints.after[name] = n - 1
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is not delivered synchronously; never go on
}
